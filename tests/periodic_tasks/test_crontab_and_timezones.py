"""Proof for docs/periodic-tasks/crontab-and-timezones.md: Celery 5.7's beat loop across DST.

Each test drives the installed `celery.beat.Scheduler` and `celery.schedules` on a virtual
clock (no sleeping; no broker, as the last two tests show): the sends are exactly what
`celery beat` would publish.
Transitions in Europe/Berlin, 2026: clocks go forward on 29 March at 02:00 CET (01:00 UTC),
and back on 25 October at 03:00 CEST (01:00 UTC).
"""

import inspect
import itertools
import logging
import subprocess
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery import current_app
from celery.schedules import crontab

from snippets.periodic_tasks.crontab_and_timezones import (
    CELERY_BEAT_SCHEDULE,
    CELERY_ENABLE_UTC,
    CELERY_TIMEZONE,
    HOURLY_ON_A_LOCAL_CLOCK,
    NIGHTLY_WITHOUT_A_MINUTE,
    beat_sends,
)
from tests.harness.net import free_port
from tests.harness.process import ROOT, fresh_python

BERLIN = ZoneInfo("Europe/Berlin")
FALL_BACK = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 03:00 CEST becomes 02:00 CET
SPRING_FORWARD = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET becomes 03:00 CEST


def only(entry: str) -> dict:
    return {entry: CELERY_BEAT_SCHEDULE[entry]}


def utc_times(sends: list) -> list[datetime]:
    return [when.astimezone(UTC).replace(microsecond=0) for _name, when in sends]


def local(sends: list) -> list[str]:
    """Send times as the office clock shows them, with the UTC offset that disambiguates."""
    return [when.replace(microsecond=0).isoformat() for _name, when in sends]


def test_the_transitions_are_where_the_tests_assume():
    """the UTC offsets around both instants."""
    before, after = FALL_BACK - timedelta(seconds=1), FALL_BACK
    assert before.astimezone(BERLIN).utcoffset() == timedelta(hours=2)
    assert after.astimezone(BERLIN).utcoffset() == timedelta(hours=1)
    before, after = SPRING_FORWARD - timedelta(seconds=1), SPRING_FORWARD
    assert before.astimezone(BERLIN).utcoffset() == timedelta(hours=1)
    assert after.astimezone(BERLIN).utcoffset() == timedelta(hours=2)
    assert (CELERY_TIMEZONE, CELERY_ENABLE_UTC) == ("Europe/Berlin", True)


def test_with_a_timezone_set_enable_utc_changes_no_date_beat_resets_its_file_on_a_change(
    tmp_path, caplog
):
    """Note 2, on Celery's own code: with CELERY_TIMEZONE set, `app.now()` and a countdown's ETA
    are in that zone whether enable_utc is on or off (the same instant); without a timezone it
    picks UTC; and beat discards its schedule file when the flag changes."""
    from celery import Celery
    from celery.beat import PersistentScheduler

    def app(**conf: object) -> Celery:
        made = Celery(set_as_current=False)
        made.conf.update(broker_url="memory://", **conf)
        return made

    for utc in (True, False):
        berlin = app(timezone=CELERY_TIMEZONE, enable_utc=utc)
        assert str(berlin.now().tzinfo) == CELERY_TIMEZONE
        eta = datetime.fromisoformat(berlin.amqp.as_task_v2("id", "t", countdown=10).headers["eta"])
        assert eta.utcoffset() == eta.astimezone(BERLIN).utcoffset()  # Berlin's, not UTC's
    assert app(enable_utc=True).now().utcoffset() == timedelta(0)

    schedule = str(tmp_path / "beat-schedule")
    for utc in (CELERY_ENABLE_UTC, not CELERY_ENABLE_UTC):
        beat_app = app(timezone=CELERY_TIMEZONE, enable_utc=utc)
        with caplog.at_level(logging.WARNING, logger="celery.beat"):
            PersistentScheduler(beat_app, schedule_filename=schedule, lazy=False).close()
    assert "Reset: UTC changed from enabled to disabled" in caplog.text


@pytest.mark.parametrize(
    "entries", [CELERY_BEAT_SCHEDULE, NIGHTLY_WITHOUT_A_MINUTE], ids=["settings", "every-minute"]
)
def test_every_entry_names_a_task_of_the_project_and_arguments_it_takes(celery_app, entries):
    """What beat sends is runnable: the task is registered, its arguments bind; the stand-in
    task records which entry sent it."""
    for name, entry in entries.items():
        task = celery_app.tasks[entry["task"]]  # KeyError: a send no worker could run
        inspect.signature(task.run).bind(*entry["args"], **entry.get("kwargs", {}))
        assert entry["args"] == [name], name


def test_a_restart_starts_from_the_last_run_beat_remembers():
    """`beat_sends(last_run_at=...)`: with the 02:30 run of the night before remembered, a start
    at 09:00 sends the missed run at once; without it, the first send is the next 02:30."""
    start = datetime(2026, 11, 3, 9, 0, tzinfo=BERLIN)
    end = start + timedelta(days=1)
    remembered = start - timedelta(days=1, hours=6, minutes=30)  # 2 November, 02:30
    sends = beat_sends(only("nightly-invoices"), CELERY_TIMEZONE, start, end, remembered)
    assert local(sends) == ["2026-11-03T09:00:00+01:00", "2026-11-04T02:30:00+01:00"]
    sends = beat_sends(only("nightly-invoices"), CELERY_TIMEZONE, start, end)
    assert local(sends) == ["2026-11-04T02:30:00+01:00"]


def test_daily_0230_fires_once_on_the_fall_back_day_at_the_first_0230():
    """02:30 happens twice on 25 October (CEST, then CET): beat sends once, at the first."""
    sends = beat_sends(
        only("nightly-invoices"),
        CELERY_TIMEZONE,
        start=FALL_BACK - timedelta(hours=14),
        end=FALL_BACK + timedelta(hours=34),
    )
    assert local(sends) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_daily_0230_on_the_spring_forward_day_fires_at_0330_cest():
    """02:30 does not exist on 29 March: beat sends at 03:30 CEST, one hour after 01:30 CET."""
    sends = beat_sends(
        only("nightly-invoices"),
        CELERY_TIMEZONE,
        start=SPRING_FORWARD - timedelta(hours=14),
        end=SPRING_FORWARD + timedelta(hours=34),
    )
    assert local(sends) == ["2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert utc_times(sends)[0] == SPRING_FORWARD + timedelta(minutes=30)


@pytest.mark.antipattern("snippets/periodic_tasks/crontab_and_timezones.py:antipattern")
def test_why_an_hourly_crontab_on_a_local_clock_skips_the_repeated_hour():
    """Five real hours pass between 23:00 and 04:00 UTC; the local crontab sends four times."""
    start, end = FALL_BACK - timedelta(hours=2, minutes=30), FALL_BACK + timedelta(hours=3)
    sends = beat_sends(HOURLY_ON_A_LOCAL_CLOCK, CELERY_TIMEZONE, start=start, end=end)
    assert local(sends) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        # 02:00+01:00 (01:00 UTC), the repeated hour, is never sent
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]
    assert FALL_BACK not in utc_times(sends)
    gaps = {b - a for a, b in zip(utc_times(sends), utc_times(sends)[1:], strict=False)}
    assert gaps == {timedelta(hours=1), timedelta(hours=2)}  # one two-hour hole


def test_the_same_crontab_on_a_utc_clock_sends_every_hour():
    """The schedule is not wrong, the clock is: on UTC the same crontab sends all five."""
    start, end = FALL_BACK - timedelta(hours=2, minutes=30), FALL_BACK + timedelta(hours=3)
    sends = beat_sends(HOURLY_ON_A_LOCAL_CLOCK, "UTC", start=start, end=end)
    assert utc_times(sends) == [FALL_BACK + timedelta(hours=h) for h in range(-2, 3)]


def test_an_hourly_crontab_on_the_spring_forward_day_sends_every_real_hour():
    """No hour repeats in spring: the local crontab misses nothing (there is no 02:00)."""
    start, end = (
        SPRING_FORWARD - timedelta(hours=2, minutes=30),
        SPRING_FORWARD + timedelta(hours=3),
    )
    sends = beat_sends(HOURLY_ON_A_LOCAL_CLOCK, CELERY_TIMEZONE, start=start, end=end)
    assert local(sends) == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]
    assert utc_times(sends) == [SPRING_FORWARD + timedelta(hours=h) for h in range(-2, 3)]


@pytest.mark.parametrize("transition", [FALL_BACK, SPRING_FORWARD], ids=["fall-back", "spring"])
def test_relative_hourly_interval_sends_every_real_hour_on_the_hour(transition):
    """The pattern: an interval rounded to the hour, on both transition days."""
    start, end = transition - timedelta(hours=2, minutes=43), transition + timedelta(hours=3)
    sends = beat_sends(only("hourly-sync"), CELERY_TIMEZONE, start=start, end=end)
    assert utc_times(sends) == [transition + timedelta(hours=h) for h in range(-2, 3)]
    assert {when.minute for _name, when in sends} == {0}


@pytest.mark.parametrize("transition", [FALL_BACK, SPRING_FORWARD], ids=["fall-back", "spring"])
def test_plain_interval_counts_elapsed_time_and_ignores_the_clock(transition):
    """A plain interval counts elapsed time: the DST change on the wall clock does not move it."""
    start, end = transition - timedelta(hours=1, minutes=3), transition + timedelta(hours=1)
    sends = beat_sends(only("cache-warmup"), CELERY_TIMEZONE, start=start, end=end)
    times = utc_times(sends)
    assert len(times) == 12
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(minutes=10)}


def test_why_a_business_time_on_a_utc_clock_moves_with_the_seasons():
    """crontab(hour=2, minute=30) on UTC is 03:30 in Berlin in winter, 04:30 in summer."""
    winter = beat_sends(
        only("nightly-invoices"),
        "UTC",
        start=datetime(2026, 1, 14, 12, tzinfo=UTC),
        end=datetime(2026, 1, 15, 12, tzinfo=UTC),
    )
    summer = beat_sends(
        only("nightly-invoices"),
        "UTC",
        start=datetime(2026, 7, 14, 12, tzinfo=UTC),
        end=datetime(2026, 7, 15, 12, tzinfo=UTC),
    )
    office = [when.astimezone(BERLIN).strftime("%H:%M") for _n, when in winter + summer]
    assert office == ["03:30", "04:30"]


@pytest.mark.antipattern("snippets/periodic_tasks/crontab_and_timezones.py:every-minute")
def test_why_crontab_hour_3_without_a_minute_runs_every_minute_of_that_hour():
    """Unset crontab fields are "*": hour=3 alone is 60 sends a night, minute=0 is one."""
    start, end = datetime(2026, 7, 14, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC)
    sends = beat_sends(NIGHTLY_WITHOUT_A_MINUTE, "UTC", start=start, end=end)
    assert len(sends) == 60
    assert {(when.hour, when.minute) for _n, when in sends} == {(3, m) for m in range(60)}
    fixed = {"nightly-cleanup": {**NIGHTLY_WITHOUT_A_MINUTE["nightly-cleanup"]}}
    fixed["nightly-cleanup"]["schedule"] = crontab(hour=3, minute=0)
    assert utc_times(beat_sends(fixed, "UTC", start=start, end=end)) == [
        datetime(2026, 7, 15, 3, tzinfo=UTC)
    ]


def test_the_simulation_leaves_the_projects_app_current(celery_app):
    """beat_sends() inside a test suite: the project's app stays current, so the suite's shared
    tasks still run on it, not on the simulated app (no settings, a clock that stands still)."""
    from snippets.periodic_tasks.beat import refresh_rates

    assert current_app._get_current_object() is celery_app
    start = datetime(2026, 7, 14, tzinfo=UTC)
    sends = beat_sends(only("cache-warmup"), CELERY_TIMEZONE, start, start + timedelta(hours=1))
    assert len(sends) == 5  # 00:10 to 00:50 UTC
    assert current_app._get_current_object() is celery_app
    assert refresh_rates.app is celery_app


SIMULATE = """
import logging
from datetime import UTC, datetime
from snippets.periodic_tasks import crontab_and_timezones as c
logging.basicConfig()  # beat's connection errors to stderr
{unstub}
start = datetime(2026, 7, 14, tzinfo=UTC)
sends = c.beat_sends(c.NIGHTLY_WITHOUT_A_MINUTE, "UTC", start, start.replace(day=15))
print(len(sends))
"""


def simulate(unstub: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """beat_sends() in a process whose CELERY_BROKER_URL points at a port nobody listens on."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    env["CELERY_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    code = SIMULATE.format(unstub=unstub)
    return fresh_python(code, env, timeout=timeout)


def test_the_simulation_needs_no_broker():
    """With the broker unreachable, beat_sends() returns: no connection is ever opened."""
    done = simulate()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["60"]


def test_why_the_simulation_without_the_producer_stub_waits_for_a_broker():
    """Scheduler.producer (the stub removed) connects on the first send, and keeps retrying."""
    with pytest.raises(subprocess.TimeoutExpired) as hung:
        simulate("del c.RecordingScheduler.producer", timeout=10)
    stderr = hung.value.stderr or b""
    assert b"beat: Connection error: [Errno 111] Connection refused" in stderr
