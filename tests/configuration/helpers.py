"""Helpers of the Configuration proofs."""

from __future__ import annotations

import json
import socket
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
