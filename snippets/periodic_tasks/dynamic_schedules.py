"""Schedules in the database (django-celery-beat): create, change and pause them at run time."""

# --8<-- [start:settings]
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"  # (1)!
# --8<-- [end:settings]


# --8<-- [start:pattern]
import json
from datetime import datetime
from typing import TypeVar

from django.db import connection, models, transaction
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

TASK = "snippets.periodic_tasks.beat.refresh_rates"
SETUP_LOCK = 5_817_203_264  # any number no other advisory lock of the project uses
M = TypeVar("M", bound=models.Model)


def schedule_every(
    name: str, seconds: int, queue: str | None = None, expire_seconds: int | None = None
) -> PeriodicTask:
    """Create or change an interval entry; beat picks it up within its max interval.

    A send not started before the next one is due is stale: it expires (by default).
    """
    with transaction.atomic():
        one_setup_at_a_time()  # (1)!
        every = first_or_create(IntervalSchedule, every=seconds, period=IntervalSchedule.SECONDS)
        task, _ = PeriodicTask.objects.update_or_create(
            name=name,  # (2)!
            defaults={
                "task": TASK,
                "interval": every,
                "args": json.dumps([name]),  # (3)!
                "queue": queue,
                "expire_seconds": expire_seconds or seconds,
            },  # not "enabled": a new row is enabled, a row an operator paused stays paused
        )
    return task


def one_setup_at_a_time() -> None:
    """Wait until no other transaction holds the setup lock; hold it until this one ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SETUP_LOCK])


def first_or_create(model: type[M], **fields: object) -> M:
    """The oldest schedule row with these fields, or a new one."""
    return model.objects.filter(**fields).order_by("pk").first() or model.objects.create(**fields)


# --8<-- [end:pattern]
# --8<-- [start:kinds]
def schedule_daily(name: str, hour: int, minute: int, timezone: str) -> PeriodicTask:
    """A business time on the clock of the given zone (each crontab row has its own)."""
    with transaction.atomic():
        one_setup_at_a_time()
        at = first_or_create(
            CrontabSchedule, minute=str(minute), hour=str(hour), day_of_week="*",
            day_of_month="*", month_of_year="*", timezone=timezone,
        )  # fmt: skip
        task, _ = PeriodicTask.objects.update_or_create(
            name=name, defaults={"task": TASK, "crontab": at, "args": json.dumps([name])}
        )
    return task


def schedule_once(name: str, when: datetime, queue: str | None = None) -> PeriodicTask:
    """Run once at `when`; beat disables the row after sending it."""
    with transaction.atomic():
        one_setup_at_a_time()
        clocked = first_or_create(ClockedSchedule, clocked_time=when)
        task, _ = PeriodicTask.objects.get_or_create(
            name=name,  # (1)!
            defaults={"task": TASK, "clocked": clocked, "one_off": True,  # (2)!
                      "args": json.dumps([name]), "queue": queue},
        )  # fmt: skip
    return task


# --8<-- [end:kinds]
# --8<-- [start:pause]
def pause(name: str) -> None:
    """One row: save() signals beat that the schedule changed."""
    task = PeriodicTask.objects.get(name=name)
    task.enabled = False
    task.save()


def pause_all(prefix: str) -> int:
    """Many rows: a queryset update() sends no signal, so tell beat yourself."""
    with transaction.atomic():
        paused = PeriodicTask.objects.filter(name__startswith=prefix).update(enabled=False)
        PeriodicTasks.update_changed()  # (1)!
    return paused


def after_time_zone_change() -> None:
    """After changing TIME_ZONE (or CELERY_TIMEZONE): forget the old last-run times."""
    with transaction.atomic():
        PeriodicTask.objects.update(last_run_at=None)
        PeriodicTasks.update_changed()


# --8<-- [end:pause]


# --8<-- [start:antipattern]
from django_celery_beat.models import PeriodicTask


def pause_all_silently(prefix: str) -> int:
    """ANTI-PATTERN: the rows change, but beat is never told; it keeps sending."""
    return PeriodicTask.objects.filter(name__startswith=prefix).update(enabled=False)


# --8<-- [end:antipattern]


# --8<-- [start:antipattern-get-or-create]
from django_celery_beat.models import IntervalSchedule, PeriodicTask  # noqa: F811


def schedule_every_get_or_create(name: str, seconds: int) -> PeriodicTask:
    """ANTI-PATTERN: two setups at once both create the interval row; later ones then raise."""
    every, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )
    task, _ = PeriodicTask.objects.update_or_create(
        name=name, defaults={"task": TASK, "interval": every, "args": json.dumps([name])}
    )
    return task


# --8<-- [end:antipattern-get-or-create]
