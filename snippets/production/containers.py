"""Containers: a task that a SIGTERM in the middle requeues and the next worker completes."""

# --8<-- [start:task]
import os
import time
from pathlib import Path

from celery import shared_task


@shared_task(soft_time_limit=120, time_limit=150)
def long_job(job_dir: str) -> str:
    """Long, and idempotent: a rerun after a requeue finds the result and does not redo it.

    (Here the "work" lasts until a `release` file appears, so the tests decide when it ends.)
    """
    job = Path(job_dir)
    if (job / "done").exists():
        return (job / "done").read_text()
    with (job / "attempts").open("a") as attempts:
        attempts.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + 100
    while not (job / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    (job / "done.tmp").write_text(f"done by {os.getpid()}")
    (job / "done.tmp").rename(job / "done")  # atomic: a half-written result never counts
    return (job / "done").read_text()


# --8<-- [end:task]
