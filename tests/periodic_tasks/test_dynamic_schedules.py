"""Proof for docs/periodic-tasks/dynamic-schedules.md: django-celery-beat's DatabaseScheduler
in a real `celery beat` subprocess, changed through the ORM while it runs."""

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import MultipleObjectsReturned
from django.db import connection, connections
from django.db.models.signals import pre_save
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from snippets.periodic_tasks.beat import refresh_rates
from snippets.periodic_tasks.dynamic_schedules import (
    CELERY_BEAT_SCHEDULER,
    after_time_zone_change,
    pause,
    pause_all,
    pause_all_silently,
    schedule_daily,
    schedule_every,
    schedule_every_get_or_create,
    schedule_once,
)
from tests.harness.wait import wait_until
from tests.periodic_tasks.helpers import read_queue

pytestmark = pytest.mark.django_db(transaction=True)
CHANGED = "DatabaseScheduler: Schedule changed."
QUIET = 2  # seconds (two 1 s beat loops) in which a stopped entry must not be sent
DATABASE_SCHEDULER = pytest.mark.deviation(
    "PERIODIC_TEST_SCHEDULER",
    reason="the page's subject: CELERY_BEAT_SCHEDULER set to the snippet's DatabaseScheduler "
    "(the unit's settings keep Celery's file scheduler)",
)


def database_beat(beat_process, env: dict[str, str] | None = None):
    """A beat on the DatabaseScheduler whose change detection is running: nudge the change
    timestamp until the beat logs that it saw a change, so the test's own changes are not
    made while it is still starting up. `env`: how beat's settings name the scheduler (by
    default, the page's value)."""
    beat = beat_process(env=env or {"PERIODIC_TEST_SCHEDULER": CELERY_BEAT_SCHEDULER})
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


@pytest.mark.services("broker", "postgres")
@pytest.mark.deviation(
    "PERIODIC_TEST_SETTINGS_BLOCK",
    reason="the page's subject: its settings block, pasted into the beat's settings",
)
def test_the_settings_block_alone_makes_beat_read_the_database(beat_process, queue_name):
    """A beat whose settings are the project's plus the block above, pasted as shown (no
    `--scheduler` option): it notices a change made through the models, and a task created
    through the ORM while it runs is sent."""
    block = {
        "PERIODIC_TEST_SETTINGS_BLOCK": "snippets/periodic_tasks/dynamic_schedules.py:settings"
    }
    beat = database_beat(beat_process, env=block)  # another scheduler never sees the change
    schedule_every("from-the-block", seconds=1, queue=queue_name, expire_seconds=60)
    beat.wait_for_sends(2, "from-the-block")
    beat.stop()
    assert {m["args"][0] for m in read_queue(queue_name)} == {"from-the-block"}


@pytest.mark.services("broker", "postgres")
@DATABASE_SCHEDULER
def test_a_task_created_through_the_orm_is_sent_without_a_restart(beat_process, queue_name):
    """created while beat runs, sent within seconds, as the registered task, with its `expires`;
    `pause()` (one `save()`) stops it."""
    beat = database_beat(beat_process)
    assert "scheduler -> django_celery_beat.schedulers.DatabaseScheduler" in beat.log()
    # beat is already running; the queue is read after a few seconds, so expire later
    created = datetime.now(UTC)
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
    assert {m["task"] for m in messages} == {refresh_rates.name}  # a name the worker runs
    # expire_seconds reaches the message: each send expires 60 s after it was sent
    expires = [datetime.fromisoformat(m["expires"]) for m in messages]
    assert min(expires) >= created + timedelta(seconds=59), (created, expires)


@pytest.mark.services("broker", "postgres")
@pytest.mark.antipattern("snippets/periodic_tasks/dynamic_schedules.py:antipattern")
@DATABASE_SCHEDULER
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


@pytest.mark.services("broker", "postgres")
@DATABASE_SCHEDULER
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


@pytest.mark.services("postgres")  # the setup takes an advisory lock
def test_each_crontab_row_has_its_own_time_zone():
    """a Europe/Berlin row on a UTC project: 02:30 in Berlin is 01:30 UTC in November."""
    task = schedule_daily("invoices-berlin", hour=2, minute=30, timezone="Europe/Berlin")
    schedule = PeriodicTask.objects.get(pk=task.pk).schedule
    assert schedule.tz == ZoneInfo("Europe/Berlin")
    # 23 November 2026: 02:30 in Berlin is 01:30 UTC; from 00:00 UTC that is 90 minutes away
    midnight = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    schedule.nowfun = lambda: midnight
    assert schedule.remaining_estimate(midnight - timedelta(hours=1)) == timedelta(minutes=90)


@pytest.mark.services("postgres")  # the setup takes an advisory lock
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


@pytest.mark.services("postgres")  # the setup takes an advisory lock
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


@pytest.mark.services("postgres")
@pytest.mark.django_db  # one connection: no commit needed
def test_calling_schedule_every_again_keeps_an_operators_pause():
    """A deploy hook that re-runs schedule_every() changes the interval (and the expiry that
    follows it by default), not the pause."""
    schedule_every("paused-by-ops", seconds=60)
    pause("paused-by-ops")
    schedule_every("paused-by-ops", seconds=120)
    task = PeriodicTask.objects.get(name="paused-by-ops")
    assert (task.enabled, task.interval.every, task.expire_seconds) == (False, 120, 120)


# Two setups at once -------------------------------------------------------------------------

ONCE_AT = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
KINDS = {  # each kind of schedule row: the PeriodicTask field, and a setup by entry name
    IntervalSchedule: ("interval", lambda name: schedule_every(name, seconds=60)),
    CrontabSchedule: ("crontab", lambda name: schedule_daily(name, 9, 0, "Europe/Paris")),
    ClockedSchedule: ("clocked", lambda name: schedule_once(name, ONCE_AT)),
}


@dataclass
class Race:
    outcomes: dict[str, object]  # racer -> what its setup returned, or the exception it raised
    meeting: str  # how the two met at the INSERT of the schedule row


def race(setup: Callable[[str], object], names: dict[str, str], model: type) -> Race:
    """Run `setup(names[racer])` for two racers at once, each a thread with its own database
    connection, and hold a racer at the INSERT of a `model` row (a pre_save receiver) until the
    other has reached its own INSERT too, or waits for a lock (pg_stat_activity). Without the
    hold, the interleaving in which both look before either inserts is rare; with it, it is
    what happens whenever the code allows it."""
    start, go = threading.Barrier(3), threading.Event()
    pids: dict[str, int] = {}
    arrived: list[str] = []
    outcomes: dict[str, object] = {}

    def hold(**_kwargs: object) -> None:
        racer = threading.current_thread().name
        if racer in names and not go.is_set():
            arrived.append(racer)
            assert go.wait(30), "the race was never released"

    def run(racer: str) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                [pids[racer]] = cursor.fetchone()
            start.wait(30)
            outcomes[racer] = setup(names[racer])
        except Exception as exc:  # the outcome under test
            outcomes[racer] = exc
        finally:
            connections.close_all()

    def waits_for(racer: str) -> str | None:
        with connection.cursor() as cursor:  # autocommit: a fresh pg_stat_activity each time
            cursor.execute(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
                [pids[racer]],
            )
            row = cursor.fetchone()
        return f"{row[0]}/{row[1]}" if row and row[0] == "Lock" else None

    def met() -> str | None:
        if len(arrived) == 2:
            return "both at the INSERT"
        if len(arrived) == 1:
            [other] = set(names) - set(arrived)
            if waiting := waits_for(other):
                return f"one at the INSERT, the other waiting: {waiting}"
        if len(outcomes) == 2:
            return f"{len(arrived)} at the INSERT, both done: {outcomes}"
        return None

    racers = [threading.Thread(target=run, args=(r,), name=r) for r in names]
    pre_save.connect(hold, sender=model, dispatch_uid="race-hold")
    try:
        for racer in racers:
            racer.start()
        start.wait(30)
        meeting = wait_until(met, 30, what="both racers at the INSERT, or one waiting")
    finally:
        go.set()
        pre_save.disconnect(sender=model, dispatch_uid="race-hold")
        for racer in racers:
            racer.join(30)
    assert not any(r.is_alive() for r in racers)
    return Race(outcomes, meeting)


@pytest.mark.services("postgres")  # two connections, PostgreSQL's locks
@pytest.mark.antipattern("snippets/periodic_tasks/dynamic_schedules.py:antipattern-get-or-create")
def test_why_two_setups_at_once_with_get_or_create_leave_two_schedule_rows():
    """both setups look before either inserts: two "every 60 seconds" rows, and the next run of
    either setup raises `MultipleObjectsReturned`; the pattern then reuses the oldest row."""
    names = {"deploy": "rates-eu", "migration": "rates-us"}
    raced = race(lambda n: schedule_every_get_or_create(n, 60), names, IntervalSchedule)
    assert raced.meeting == "both at the INSERT"
    assert all(isinstance(task, PeriodicTask) for task in raced.outcomes.values()), raced
    rows = list(IntervalSchedule.objects.filter(every=60).order_by("pk"))
    assert len(rows) == 2
    with pytest.raises(MultipleObjectsReturned):
        schedule_every_get_or_create("rates-eu", 60)  # the next deploy
    assert schedule_every("rates-eu", 60).interval == rows[0]  # the pattern copes


@pytest.mark.services("postgres")
@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("same_entry", [False, True], ids=["two-entries", "one-entry-twice"])
def test_two_setups_at_once_share_one_schedule_row(model, same_entry):
    """the second setup waits on the advisory lock, then finds the first one's row: one
    schedule row, each entry once, no exception."""
    field, setup = KINDS[model]
    names = {"deploy": "rates", "migration": "rates" if same_entry else "rates-2"}
    raced = race(setup, names, model)
    assert raced.meeting == "one at the INSERT, the other waiting: Lock/advisory"
    tasks = raced.outcomes.values()
    assert all(isinstance(task, PeriodicTask) for task in tasks), raced
    assert model.objects.count() == 1
    assert PeriodicTask.objects.count() == len(set(names.values()))
    assert {getattr(task, field) for task in tasks} == {model.objects.get()}


@pytest.mark.services("postgres")
@pytest.mark.django_db  # one connection: no commit needed
@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.__name__)
def test_a_duplicate_made_elsewhere_is_reused_not_raised(model):
    """two identical rows, as the admin or beat's own sync can leave them: the setup takes the
    oldest instead of raising MultipleObjectsReturned."""
    field, setup = KINDS[model]
    first = getattr(setup("rates"), field)
    fields = [f.name for f in model._meta.concrete_fields if not f.primary_key]
    model.objects.create(**{name: getattr(first, name) for name in fields})
    assert model.objects.count() == 2
    assert getattr(setup("rates"), field) == first
    assert getattr(setup("rates-2"), field) == first
