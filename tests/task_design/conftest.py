"""Helpers for the task design proofs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest


def wait_until(
    predicate: Callable[[], object], timeout: float = 60, what: str = "", wp: object = None
) -> object:
    """Poll `predicate` until it is truthy (generous deadline: the machine is shared).
    On a timeout, the error carries the end of the worker's log when `wp` is given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    log = f"\n--- worker log ---\n{wp.log()[-4000:]}" if wp is not None else ""
    raise TimeoutError(f"not true after {timeout}s: {what or predicate}{log}")


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


@pytest.fixture(scope="session")
def shared_prefork_worker(celery_app, django_db_setup, tmp_path_factory):
    """One real prefork worker (3 children) for the section's tests that may share it.

    Starting a worker subprocess costs seconds; tests that only need *a* prefork worker (and
    may SIGKILL one of its children: the pool replaces it) share this one. Publish to its
    queue. Tests that need special settings start their own with `worker_process`.
    """
    import subprocess
    import sys
    import uuid

    from tests.conftest import ROOT, WorkerProcess, require_services, worker_env

    require_services("broker")
    name = f"td-shared-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path_factory.mktemp("td-worker") / f"{name}.log"
    cmd = [
        sys.executable, "-m", "tests.covered_celery", "-A", "snippets.project", "worker",
        "--pool=prefork", "--concurrency=3", f"--hostname={name}@%h", f"--queues={name}",
        "--loglevel=INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    import socket

    wp = WorkerProcess(proc, f"{name}@{socket.gethostname()}", name, log_path, celery_app)
    try:
        wp.wait_ready()
        yield wp
    finally:
        wp.stop(signal.SIGTERM, timeout=20)
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_delete(wp.queue)


def task_pid(result, timeout: float = 60) -> int:
    """The pid of the pool child running `result`'s task (track_started stores it)."""
    wait_until(lambda: result.state == "STARTED", timeout, what=f"{result.id} STARTED")
    return result.info["pid"]
