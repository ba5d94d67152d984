"""Celery Beat: a schedule in settings, one beat process, expiring sends, no overlapping runs."""

# --8<-- [start:settings]
from datetime import timedelta

CELERY_BEAT_SCHEDULE = {
    "refresh-rates": {
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "schedule": timedelta(minutes=5),
        "args": ["refresh-rates"],  # this site's stand-in task records which entry sent it
        "options": {"expires": 4 * 60},  # (1)!
    },
    "rebuild-search-index": {
        "task": "snippets.periodic_tasks.beat.rebuild_search_index",
        "schedule": timedelta(minutes=15),  # (2)!
        "args": ["rebuild-search-index"],
        "options": {"expires": 14 * 60},
    },
}
# --8<-- [end:settings]


# --8<-- [start:task]
from celery import Task, shared_task
from django.utils import timezone

from snippets.periodic_tasks.models import PeriodicRun


@shared_task(bind=True)
def refresh_rates(self: Task, entry: str) -> int:
    """A short periodic job (a stand-in): one row per send, so sends can be counted.

    The same send delivered again (the same task id) finds its row instead of adding one.
    """
    now = timezone.now()
    run, _created = PeriodicRun.objects.get_or_create(
        task_id=self.request.id, defaults={"entry": entry, "started_at": now, "finished_at": now}
    )
    return run.pk


# --8<-- [end:task]


# --8<-- [start:lock]
import logging
import os
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Task, shared_task
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


@contextmanager
def single_instance(name: str) -> Iterator[bool]:
    """Yield True if this process got the named lock, False if another run holds it."""
    key = zlib.crc32(name.encode())  # (1)!
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        (acquired,) = cursor.fetchone()
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:  # the session is gone, and its lock with it: do not mask
                logger.warning("%s: connection lost before unlock", name)  # the job's error


# How long the stand-in works: 1 s here; a proof that needs longer runs sets it on its worker
# (a deviation it declares).
REBUILD_SECONDS = float(os.environ.get("SNIPPETS_REBUILD_SECONDS", "1"))


def rebuild(entry: str, task_id: str) -> int:
    """The slow work itself (a stand-in): record the run's start and end."""
    run = PeriodicRun.objects.create(entry=entry, task_id=task_id, started_at=timezone.now())
    time.sleep(REBUILD_SECONDS)
    PeriodicRun.objects.filter(pk=run.pk).update(finished_at=timezone.now())
    return run.pk


@shared_task(bind=True, soft_time_limit=25 * 60, time_limit=26 * 60)  # (2)!
def rebuild_search_index(self: Task, entry: str) -> int | None:
    """A job that can outlast its interval: a run that finds the lock taken does nothing."""
    with single_instance(entry) as acquired:
        if not acquired:
            logger.warning(
                "%s[%s]: the previous run still holds the lock; skipping this run",
                entry, self.request.id,
            )  # fmt: skip
            return None
        return rebuild(entry, self.request.id)


# --8<-- [end:lock]


# --8<-- [start:antipattern]
from celery import Task, shared_task


@shared_task(
    bind=True,
)
def rebuild_search_index_unlocked(self: Task, entry: str) -> int:
    """ANTI-PATTERN: nothing stops the next send from starting while this run still works."""
    return rebuild(entry, self.request.id)


# --8<-- [end:antipattern]
