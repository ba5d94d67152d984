"""Helpers of the Configuration proofs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from snippets.configuration.models import TaskRun

SETTINGS_OVERRIDE = "tests.configuration.settings_override"


def settings_env(base: str = "snippets.project.settings", **overrides: Any) -> dict[str, str]:
    """Environment for `worker_process(env=...)`: Django settings `base` plus `overrides`."""
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS_OVERRIDE,
        "SNIPPETS_BASE_SETTINGS": base,
        "SNIPPETS_SETTINGS_OVERRIDES": json.dumps(overrides),
    }


def wait_until(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def runs_of(task_id: str) -> list[TaskRun]:
    return list(TaskRun.objects.filter(task_id=task_id).order_by("started_at"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, on a free port; started and stopped by the test.
    `persistence`: a config file path and/or options (default: nothing is ever written)."""

    NO_PERSISTENCE = ("--save", "", "--appendonly", "no")

    def __init__(self, tmp_path, persistence: tuple[str, ...] = NO_PERSISTENCE) -> None:
        self.port = free_port()
        self.persistence = persistence
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", *self.persistence, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
