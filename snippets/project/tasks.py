"""Tasks with nothing but the project's defaults: what the settings alone do to a task.

tests/test_project.py runs them on a worker started with the project settings, so the
proof is of the settings the page shows, not of options a task sets for itself.
"""

import os
import signal
from pathlib import Path

from celery import Task, shared_task


def note_attempt(task: Task, path: str) -> None:
    """Append the attempt's retry count to `path` (a file: no database, no result backend)."""
    with Path(path).open("a") as attempts:
        attempts.write(f"{task.request.retries}\n")


@shared_task(bind=True, default_retry_delay=1)  # the 180 s default, shortened for the test
def crash_every_time(self: Task, path: str) -> None:
    """A poison message: the input kills the process running it (a segfault, the OOM killer)."""
    note_attempt(self, path)
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(bind=True, retry_on_worker_lost=False, reject_on_worker_lost=True)
def crash_every_time_requeued(self: Task, path: str) -> None:
    """The same poison under the setting this project used before: requeued on every death."""
    note_attempt(self, path)
    os.kill(os.getpid(), signal.SIGKILL)
