"""Scaling: queues per workload, and pool children recycled before they leak the box dry."""

# --8<-- [start:tasks]
import time
from pathlib import Path

from celery import Task, shared_task


def _log(path: str, line: str, task_id: str) -> None:
    """Note that a job finished, once per message: a redelivered one finds its line."""
    log = Path(path)
    if log.exists() and f" {task_id}\n" in log.read_text():
        return
    with log.open("a") as f:
        f.write(f"{line} {task_id}\n")


@shared_task(bind=True, soft_time_limit=60, time_limit=90)
def build_report(self: Task, release_path: str, log_path: str) -> str:
    """A slow job (here: until a file says it may finish, at most a minute)."""
    deadline = time.monotonic() + 55
    while not Path(release_path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    _log(log_path, "build_report", self.request.id)
    return "report"


@shared_task(bind=True, soft_time_limit=10, time_limit=20)
def send_receipt(self: Task, log_path: str) -> str:
    """A fast job that a user is waiting for."""
    _log(log_path, "send_receipt", self.request.id)
    return "receipt"


# --8<-- [end:tasks]

# --8<-- [start:leak]
import os

from celery import shared_task

_cache: list[bytes] = []  # a module-level cache that only grows: a leak, as in real life


@shared_task
def child_pid(leak_mib: int = 0) -> int:
    """Report which pool child ran the task, after leaking `leak_mib` MiB into it."""
    _cache.append(os.urandom(leak_mib * 1024 * 1024))
    return os.getpid()


# --8<-- [end:leak]
