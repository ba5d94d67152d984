"""Worker settings: prefetch, acks, and recycling pool children, proved on real workers."""

# --8<-- [start:record_run]
import os
import time

from celery import Task, shared_task
from django.utils import timezone

from snippets.configuration.models import TaskRun


@shared_task(bind=True)
def record_run(self: Task, key: str, seconds: float = 0.0) -> int:
    """Record who ran this message and when, then work for `seconds`; return the child's pid."""
    run = TaskRun.objects.create(
        task_id=self.request.id,
        key=key,
        hostname=self.request.hostname or "",
        pid=os.getpid(),
        started_at=timezone.now(),
    )
    time.sleep(seconds)  # stands in for real work
    TaskRun.objects.filter(pk=run.pk).update(finished_at=timezone.now())
    return os.getpid()


# --8<-- [end:record_run]


# --8<-- [start:leaky_task]
from celery import shared_task

_CACHE: list[bytes] = []


@shared_task
def leaky_task(kib: int) -> int:
    """ANTI-PATTERN: a module-level cache that only grows; every call keeps `kib` KiB forever."""
    _CACHE.append(b"x" * kib * 1024)
    return len(_CACHE)  # how many calls this pool child has served


# --8<-- [end:leaky_task]
