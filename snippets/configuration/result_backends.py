"""Result backends: store results only where someone reads them, and only for as long."""

# --8<-- [start:settings]
import os
from datetime import timedelta

CELERY_RESULT_BACKEND = os.environ["CELERY_RESULT_BACKEND"]  # redis://host:6379/1; no default
CELERY_RESULT_EXPIRES = timedelta(days=1)  # (1)!
CELERY_RESULT_CHORD_EXPIRES = timedelta(hours=2).total_seconds()  # (2)!
CELERY_TASK_TRACK_STARTED = True  # (3)!
# --8<-- [end:settings]


# --8<-- [start:tasks]
import os

from celery import Task, chord, shared_task
from celery.result import AsyncResult
from django.utils import timezone

from snippets.configuration.models import TaskRun


@shared_task
def count_rows(shard: int) -> int:
    """One part of a parallel job: its result is read by the chord's callback."""
    return shard * 10


@shared_task
def add_up(counts: list[int]) -> int:
    """The chord's callback: runs once every part has stored its result."""
    return sum(counts)


def count_in_parallel(shards: list[int]) -> AsyncResult:
    """Fan out, then join: a chord needs a result backend and results on its parts."""
    return chord(count_rows.s(shard) for shard in shards)(add_up.s())


@shared_task(bind=True, ignore_result=True)  # (1)!
def record_event(self: Task, name: str) -> None:
    """Fire-and-forget: nobody reads a result, so none is stored."""
    TaskRun.objects.get_or_create(  # (2)!
        task_id=self.request.id, key=name, defaults={
            "hostname": self.request.hostname or "", "pid": os.getpid(),
            "started_at": timezone.now(),
        },
    )  # fmt: skip


# --8<-- [end:tasks]


# --8<-- [start:quiet_parts]
from celery import shared_task


@shared_task(
    ignore_result=True,  # ANTI-PATTERN for a chord part: works on Redis only
)
def count_rows_quietly(shard: int) -> int:
    return shard * 10


# --8<-- [end:quiet_parts]


# --8<-- [start:status]
from celery import current_app, shared_task
from celery.result import AsyncResult
from celery.signals import before_task_publish


@shared_task(report_sent=True)
def build_export(export_id: int) -> str:
    """A task whose progress a page polls by task id."""
    return f"export-{export_id}.csv"


@before_task_publish.connect(weak=False)
def mark_sent(sender: str | None = None, headers: dict | None = None, **_kw: object) -> None:
    """Tasks that opt in read SENT from the moment they are published."""  # (1)!
    task = current_app.tasks.get(sender or "")
    if headers and getattr(task, "report_sent", False):
        task.backend.store_result(headers["id"], None, "SENT")


def export_status(task_id: str) -> str:
    """What to tell the user; PENDING no longer hides behind "queued"."""
    state = AsyncResult(task_id).state
    return {
        "SENT": "queued",
        "RECEIVED": "queued",
        "STARTED": "running",
        "RETRY": "running",  # waiting for its next attempt
        "SUCCESS": "done",
        "FAILURE": "failed",
        "REJECTED": "failed",
        "REVOKED": "cancelled",
        "IGNORED": "stopped",
        "PENDING": "unknown or expired",  # (2)!
    }.get(state, state.lower())  # a custom state, as it is: never a false "in progress"


# --8<-- [end:status]


# --8<-- [start:antipattern]
from celery.result import AsyncResult


def export_status_naive(task_id: str) -> str:
    """ANTI-PATTERN: PENDING is what the backend says for any id it has no record of."""
    state = AsyncResult(task_id).state
    return "queued" if state == "PENDING" else state.lower()


# --8<-- [end:antipattern]
