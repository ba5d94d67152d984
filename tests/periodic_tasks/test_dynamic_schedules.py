"""Proof for docs/periodic-tasks/dynamic-schedules.md: django-celery-beat's DatabaseScheduler
in a real `celery beat` subprocess, changed through the ORM while it runs."""

import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery.utils.imports import symbol_by_name
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

from snippets.periodic_tasks.dynamic_schedules import (
    CELERY_BEAT_SCHEDULER,
    after_time_zone_change,
    pause,
    pause_all,
    pause_all_silently,
    schedule_daily,
    schedule_every,
    schedule_once,
)
from tests.harness.wait import wait_until
from tests.periodic_tasks.helpers import read_queue

pytestmark = pytest.mark.django_db(transaction=True)
CHANGED = "DatabaseScheduler: Schedule changed."
QUIET = 2  # seconds (two 1 s beat loops) in which a stopped entry must not be sent


def database_beat(beat_process):
    """A beat on the DatabaseScheduler whose change detection is running: nudge the change
    timestamp until the beat logs that it saw a change, so the test's own changes are not
    made while it is still starting up."""
    beat = beat_process(env={"PERIODIC_TEST_SCHEDULER": CELERY_BEAT_SCHEDULER})
    beat.wait_for_log("beat: Starting...")

    def changed() -> bool:
        if CHANGED in beat.log():
            return True
        PeriodicTasks.update_changed()
        return False

    wait_until(changed, 60, what="the beat to see a schedule change", interval=1, context=beat)
    return beat


def sends_after_last_change(beat, entry: str) -> list[str]:
    """Sends of `entry` logged after the last "Schedule changed" line."""
    tail = beat.log().rpartition(CHANGED)[2]
    return re.findall(rf"Sending due task {re.escape(entry)} ", tail)


def test_the_setting_names_the_database_scheduler():
    """The page's setting makes beat use django-celery-beat's `DatabaseScheduler`."""
    assert symbol_by_name(CELERY_BEAT_SCHEDULER) is DatabaseScheduler


@pytest.mark.services("broker")
def test_a_task_created_through_the_orm_is_sent_without_a_restart(beat_process, queue_name):
    """created while beat runs, sent within seconds with its `expires`; `pause()` (one `save()`)
    stops it."""
    beat = database_beat(beat_process)
    assert "scheduler -> django_celery_beat.schedulers.DatabaseScheduler" in beat.log()
    # beat is already running; the queue is read after a few seconds, so expire later
    schedule_every("orm-report", seconds=1, queue=queue_name, expire_seconds=60)
    beat.wait_for_sends(2, "orm-report")
    changes = beat.log().count(CHANGED)
    pause("orm-report")  # save() on one row: beat is told
    beat.wait_for(lambda b: b.log().count(CHANGED) > changes)
    time.sleep(QUIET)
    beat.stop()
    assert sends_after_last_change(beat, "orm-report") == []
    messages = read_queue(queue_name)
    assert {s.id for s in beat.confirmed("orm-report")} <= {m["id"] for m in messages}
    assert {tuple(m["args"]) for m in messages} == {("orm-report",)}
    assert all(m["expires"] for m in messages)  # expire_seconds reaches the message


@pytest.mark.services("broker")
@pytest.mark.antipattern("snippets/periodic_tasks/dynamic_schedules.py:antipattern")
def test_why_a_bulk_update_is_ignored_until_update_changed(beat_process, queue_name):
    """three more sends of each "disabled" entry, then none after `update_changed()`."""
    for name in ("bulk-a", "bulk-b"):
        schedule_every(name, seconds=1, queue=queue_name)
    beat = database_beat(beat_process)
    beat.wait_for_sends(2, "bulk-a")
    changes = beat.log().count(CHANGED)
    assert pause_all_silently("bulk-") == 2
    assert not PeriodicTask.objects.filter(name__startswith="bulk-", enabled=True).exists()
    before = len(beat.sends("bulk-a")), len(beat.sends("bulk-b"))
    beat.wait_for_sends(before[0] + 3, "bulk-a")  # the rows say disabled; beat keeps sending
    beat.wait_for_sends(before[1] + 3, "bulk-b")
    assert beat.log().count(CHANGED) == changes  # it never heard of the change

    assert pause_all("bulk-") == 2  # the same update, plus PeriodicTasks.update_changed()
    beat.wait_for(lambda b: b.log().count(CHANGED) > changes)
    time.sleep(QUIET)
    beat.stop()
    assert sends_after_last_change(beat, "bulk-a") == []
    assert sends_after_last_change(beat, "bulk-b") == []


@pytest.mark.services("broker")
def test_a_one_off_clocked_task_is_sent_once_and_disabled(beat_process, queue_name):
    """one send; the row is disabled. The request is retried before and after the send (the
    same name and moment): one row, still one send, and the sent row stays disabled."""
    beat = database_beat(beat_process)
    when = timezone.now() + timedelta(seconds=1)
    first = schedule_once("once", when, queue=queue_name)
    assert schedule_once("once", when, queue=queue_name) == first  # a retry: no ValidationError
    beat.wait_for_sends(1, "once")
    time.sleep(QUIET)
    assert PeriodicTask.objects.get(name="once").enabled  # sent, but not yet disabled
    PeriodicTasks.update_changed()  # any change makes beat re-read its schedule
    wait_until(lambda: not PeriodicTask.objects.get(name="once").enabled, what="disabled")
    assert not schedule_once("once", when, queue=queue_name).enabled  # a late retry
    PeriodicTasks.update_changed()
    time.sleep(QUIET)
    beat.stop()
    assert beat.sends("once") == ["once"]
    [message] = read_queue(queue_name)
    assert message["args"] == ["once"]


def test_each_crontab_row_has_its_own_time_zone():
    """a Europe/Berlin row on a UTC project: 02:30 in Berlin is 01:30 UTC in November."""
    task = schedule_daily("invoices-berlin", hour=2, minute=30, timezone="Europe/Berlin")
    schedule = PeriodicTask.objects.get(pk=task.pk).schedule
    assert schedule.tz == ZoneInfo("Europe/Berlin")
    # 23 November 2026: 02:30 in Berlin is 01:30 UTC; from 00:00 UTC that is 90 minutes away
    midnight = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    schedule.nowfun = lambda: midnight
    assert schedule.remaining_estimate(midnight - timedelta(hours=1)) == timedelta(minutes=90)


def test_after_a_time_zone_change_last_run_times_are_forgotten_and_beat_is_told():
    """After a time zone change the rows' last run times are reset and beat is told to reload."""
    task = schedule_every("tz-change", seconds=60)
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now())
    before = PeriodicTasks.last_change()
    after_time_zone_change()
    assert PeriodicTask.objects.get(pk=task.pk).last_run_at is None
    assert PeriodicTasks.last_change() > before


def sends_of(schedule, start: datetime, end: datetime) -> list[str]:
    """Celery's beat loop on a virtual clock, with a django-celery-beat schedule object in it
    (the project's UTC clock; the row's own zone inside the schedule)."""
    from celery import Celery

    from snippets.periodic_tasks.crontab_and_timezones import RecordingScheduler, VirtualClock

    app = Celery("dcb-simulated", set_as_current=False)
    app.conf.timezone = "UTC"
    clock = VirtualClock(start, app)
    app.now = clock
    scheduler = RecordingScheduler(app, clock)
    scheduler.update_from_dict({"row": {"task": "t", "schedule": schedule}})
    for entry in scheduler.schedule.values():
        entry.schedule.nowfun = clock  # TzAwareCrontab reads the wall clock otherwise
        entry.last_run_at = clock()
    while clock.now < end:
        clock.now += timedelta(seconds=max(scheduler.tick(), 0.001))
    berlin = ZoneInfo("Europe/Berlin")
    return [w.astimezone(berlin).replace(microsecond=0).isoformat() for _n, w in scheduler.sent]


def test_a_berlin_crontab_row_behaves_like_celerys_crontab_across_dst():
    """The table on crontab-and-timezones.md, with the row's TzAwareCrontab on a UTC project."""
    from django_celery_beat.models import CrontabSchedule

    daily = schedule_daily("nightly-berlin", hour=2, minute=30, timezone="Europe/Berlin")
    nightly = PeriodicTask.objects.get(pk=daily.pk).schedule
    hourly = CrontabSchedule(minute="0", timezone="Europe/Berlin").schedule
    fall_back = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    spring = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    hours = timedelta(hours=1)
    assert sends_of(nightly, fall_back - 14 * hours, fall_back + 34 * hours) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert sends_of(nightly, spring - 14 * hours, spring + 34 * hours) == [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    assert sends_of(hourly, fall_back - 2.5 * hours, fall_back + 3 * hours) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]  # fmt: skip  (the repeated 02:00 is skipped here too)


@pytest.mark.django_db
def test_calling_schedule_every_again_keeps_an_operators_pause():
    """A deploy hook that re-runs schedule_every() changes the interval, not the pause."""
    schedule_every("paused-by-ops", seconds=60)
    pause("paused-by-ops")
    schedule_every("paused-by-ops", seconds=120)
    task = PeriodicTask.objects.get(name="paused-by-ops")
    assert (task.enabled, task.interval.every) == (False, 120)
