"""Helpers for the task design proofs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest


def wait_until(predicate: Callable[[], object], timeout: float = 60, what: str = "") -> object:
    """Poll `predicate` until it is truthy (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"not true after {timeout}s: {what or predicate}")


def kill_pool_child(wp) -> int:
    """SIGKILL the single pool child of a prefork worker (the one running the task)."""
    [child] = wp.pool_pids()
    os.kill(child, signal.SIGKILL)
    return child


def kill_worker(wp) -> None:
    """Pull the plug on a whole worker (main process and children) without a warm shutdown."""
    if wp.proc.poll() is None:
        os.killpg(wp.proc.pid, signal.SIGKILL)
        wp.proc.wait(10)


@pytest.fixture
def unique_key(request) -> str:
    return f"{request.node.name[:60]}-{time.time_ns()}"
