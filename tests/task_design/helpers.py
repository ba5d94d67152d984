"""Helpers of the task design proofs: kills aimed at a worker, the pid a task ran in."""

from __future__ import annotations

import os
import signal

from tests.harness.celery import WorkerProcess
from tests.harness.wait import wait_until


def kill_pool_child(wp: WorkerProcess) -> int:
    """SIGKILL the single pool child of a prefork worker (the one running the task)."""
    [child] = wp.pool_pids()
    os.kill(child, signal.SIGKILL)
    return child


def kill_worker(wp: WorkerProcess) -> None:
    """Pull the plug on a whole worker (main process and children) without a warm shutdown."""
    wp.kill()


def task_pid(result, timeout: float = 60) -> int:
    """The pid of the pool child running `result`'s task (track_started stores it)."""
    wait_until(lambda: result.state == "STARTED", timeout, what=f"{result.id} STARTED")
    return result.info["pid"]
