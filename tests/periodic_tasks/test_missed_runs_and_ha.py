"""Proof for docs/periodic-tasks/missed-runs-and-ha.md.

Missed runs: Celery 5.7's own scheduler on a virtual clock, restarted with the `last_run_at` a
persistent schedule remembers. High availability: real `celery beat` subprocesses with the
leader lock, on PostgreSQL.
"""

import logging
import signal
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab

from snippets.periodic_tasks.beat import refresh_rates
from snippets.periodic_tasks.crontab_and_timezones import RecordingScheduler, beat_sends
from snippets.periodic_tasks.missed_runs_and_ha import (
    CELERY_BEAT_CRON_STARTING_DEADLINE,
    IdleStandbyMixin,
    LeaderLockMixin,
)
from tests.harness.wait import wait_until
from tests.periodic_tasks.helpers import every_second, read_queue

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTLY = {"nightly": {"task": "t", "schedule": crontab(hour=2, minute=30)}}
EVERY_10_MIN = {"warmup": {"task": "t", "schedule": timedelta(minutes=10)}}
LEADER = "snippets.periodic_tasks.missed_runs_and_ha:LeaderScheduler"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN)


def times(sends: list) -> list[str]:
    return [when.replace(microsecond=0).isoformat() for _name, when in sends]


def restart(schedule: dict, last_run_at: datetime, start: datetime, end: datetime, deadline=None):
    return beat_sends(
        schedule,
        "Europe/Berlin",
        start=start,
        end=end,
        last_run_at=last_run_at,
        cron_starting_deadline=deadline,
    )


@pytest.mark.antipattern("snippets/periodic_tasks/missed_runs_and_ha.py:deadline")
def test_why_a_crontab_missed_while_beat_was_down_runs_at_startup():
    """Beat down from 01:00 to 09:00: the 02:30 job is sent at 09:00, hours late."""
    sends = restart(NIGHTLY, last_run_at=at(2, 2, 30), start=at(3, 9), end=at(4, 12))
    assert times(sends) == ["2026-11-03T09:00:00+01:00", "2026-11-04T02:30:00+01:00"]


def test_missed_runs_are_caught_up_once_not_once_per_missed_run():
    """Down for three nights: one late send at startup, not three."""
    sends = restart(NIGHTLY, last_run_at=at(1, 2, 30), start=at(4, 9), end=at(5, 12))
    assert times(sends) == ["2026-11-04T09:00:00+01:00", "2026-11-05T02:30:00+01:00"]
    sends = restart(EVERY_10_MIN, last_run_at=at(3, 8), start=at(3, 9), end=at(3, 9, 25))
    assert times(sends) == [  # an interval: one send at startup, then every 10 minutes
        "2026-11-03T09:00:00+01:00",
        "2026-11-03T09:10:00+01:00",
        "2026-11-03T09:20:00+01:00",
    ]


def test_with_a_starting_deadline_a_stale_missed_run_is_skipped():
    """skipped at 09:00, sent at 02:35."""
    deadline = CELERY_BEAT_CRON_STARTING_DEADLINE
    late = restart(NIGHTLY, at(2, 2, 30), start=at(3, 9), end=at(4, 12), deadline=deadline)
    assert times(late) == ["2026-11-04T02:30:00+01:00"]  # no 09:00 send; the next night runs
    within = restart(NIGHTLY, at(2, 2, 30), start=at(3, 2, 35), end=at(3, 12), deadline=deadline)
    assert times(within) == ["2026-11-03T02:35:00+01:00"]  # 5 minutes late: still sent


def test_the_deadline_does_not_apply_to_intervals():
    """`beat_cron_starting_deadline` skips stale crontab runs only: an interval entry still runs at
    startup."""
    sends = restart(EVERY_10_MIN, at(3, 8), start=at(3, 9), end=at(3, 9, 5), deadline=600)
    assert times(sends) == ["2026-11-03T09:00:00+01:00"]


def test_a_standby_tries_the_lock_every_few_seconds():
    """Every `standby_interval` seconds: at least once a minute (beat alone would sleep up to its
    max interval, 300 s, before a takeover), at most once a second (no busy loop on PostgreSQL).
    Over one virtual hour of a standby that never wins the lock."""
    tries: list[datetime] = []

    class Standby(LeaderLockMixin, RecordingScheduler):
        def is_leader(self) -> bool:
            tries.append(self.clock())
            if len(tries) > 3600:
                raise AssertionError("more than one try a second: a busy loop")
            self._leader = False
            return False

    beat_sends(NIGHTLY, "Europe/Berlin", start=at(3, 9), end=at(3, 10), scheduler_class=Standby)
    assert 60 <= len(tries) <= 3600


def standby_until(mixin: type, takeover: datetime) -> type[RecordingScheduler]:
    """The page's mixin on the virtual clock, the lock scripted: won at `takeover`."""

    class Standby(mixin, RecordingScheduler):
        def is_leader(self) -> bool:
            self._leader = self.clock() >= takeover
            return self._leader

    return Standby


def takeover_sends(mixin: type, takeover: datetime, deadline=None) -> list[str]:
    """A standby started at 00:00 that wins the lock at `takeover`, while the leader it
    replaces sent the 02:30 job: what does the standby send until the next night?"""
    return times(
        beat_sends(
            NIGHTLY,
            "Europe/Berlin",
            start=at(3, 0),
            end=at(4, 12),
            cron_starting_deadline=deadline,
            scheduler_class=standby_until(mixin, takeover),
        )
    )


def test_a_standby_that_takes_over_does_not_resend_what_the_leader_sent():
    """The standby runs the schedule without sending: 02:30 is done for it too."""
    assert takeover_sends(LeaderLockMixin, takeover=at(3, 9)) == ["2026-11-04T02:30:00+01:00"]
    late = takeover_sends(LeaderLockMixin, at(3, 2, 35), CELERY_BEAT_CRON_STARTING_DEADLINE)
    assert late == ["2026-11-04T02:30:00+01:00"]
    # and a standby that holds the lock from the start sends as any beat does
    assert takeover_sends(LeaderLockMixin, takeover=at(3, 0)) == [
        "2026-11-03T02:30:00+01:00",
        "2026-11-04T02:30:00+01:00",
    ]


@pytest.mark.antipattern("snippets/periodic_tasks/missed_runs_and_ha.py:idle-standby")
def test_why_an_idle_standby_resends_the_crontab_runs_the_leader_sent():
    """A standby that skips tick() takes over with its start-up last_run_at: 02:30 again."""
    assert takeover_sends(IdleStandbyMixin, takeover=at(3, 9)) == [
        "2026-11-03T09:00:00+01:00",
        "2026-11-04T02:30:00+01:00",
    ]
    late = takeover_sends(IdleStandbyMixin, at(3, 2, 35), CELERY_BEAT_CRON_STARTING_DEADLINE)
    assert late == ["2026-11-03T02:35:00+01:00", "2026-11-04T02:30:00+01:00"]  # deadline or not


@pytest.mark.django_db(transaction=True)
@pytest.mark.services("broker", "postgres")
@pytest.mark.deviation(
    "--scheduler=snippets.periodic_tasks.missed_runs_and_ha:LeaderScheduler",  # LEADER
    reason="the page's subject: the leader-lock scheduler (the unit runs the settings' scheduler)",
)
def test_two_leader_beats_send_once_and_the_standby_takes_over(beat_process, queue_name):
    """Both beats run; one holds the lock and sends. SIGKILL it: the other takes over."""
    schedule = every_second(refresh_rates, queue_name, "refresh-rates")
    beats = [beat_process(schedule, scheduler=LEADER) for _ in range(2)]
    wait_until(lambda: any(len(b.sends()) >= 2 for b in beats), what="the leader sent")
    [leader] = [b for b in beats if b.sends()]
    [standby] = [b for b in beats if b is not leader]
    standby.wait_for_log("standing by")
    assert standby.sends() == []
    assert (
        "this beat holds the lock" not in standby.log()
    )  # each beat says what it is, and only that
    assert "standing by" not in leader.log()
    leader.stop(signal.SIGKILL)  # no shutdown, no unlock: only the closed connection frees it
    standby.wait_for_log("this beat holds the lock")
    standby.wait_for(lambda beat: len(beat.confirmed()) >= 2)
    standby.stop()
    led, took_over = leader.confirmed(), standby.confirmed()
    assert len(took_over) >= 2
    assert max(s.at for s in led) < min(s.at for s in took_over)  # never two senders at once
    ids = {m["id"] for m in read_queue(queue_name)}
    assert {s.id for s in led + took_over} <= ids
    assert len(ids) - len(led) - len(took_over) in (0, 1, 2)  # (publishes cut before their log)


@pytest.mark.django_db(transaction=True)
@pytest.mark.services("postgres")
def test_a_leader_that_loses_its_lock_connection_stops_sending_then_competes_again(caplog):
    """PostgreSQL drops the leader's session (restart, failover, idle kill): the lock is gone,
    so the beat must stop sending at once, and may lead again only by winning the lock."""
    from django.db import connection

    from snippets.periodic_tasks.missed_runs_and_ha import LeaderLockMixin

    class Probe(LeaderLockMixin):
        max_interval = 1

    def said() -> tuple[int, int]:
        """How often "this beat holds the lock" and "standing by" were logged: once per change."""
        lines = [r.getMessage() for r in caplog.records]
        return sum("this beat holds" in m for m in lines), sum("standing by" in m for m in lines)

    caplog.set_level(logging.WARNING, logger="snippets.periodic_tasks.missed_runs_and_ha")
    probe, rival = Probe(), Probe()
    try:
        assert probe.is_leader() is True
        assert said() == (1, 0)  # the winner says so when it wins the lock
        assert probe.is_leader() is True
        assert rival.is_leader() is False  # the lock is taken
        assert said() == (1, 1)  # the loser says it stands by, once
        assert rival.is_leader() is False
        assert said() == (1, 1)  # not again on every tick, for either
        backend = probe._lock_connection.connection.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        assert probe.is_leader() is False  # its session is gone, and the lock with it
        assert "lost the connection that holds the lock" in caplog.text
        assert said() == (1, 2)  # the old leader stands by
        assert rival.is_leader() is True  # the rival wins it on its next tick
        assert said() == (2, 2)
        assert probe.is_leader() is False  # and the old leader stands by
        assert said() == (2, 2)
        roles = [
            (r.levelname, r.getMessage().split("lock ")[0])
            for r in caplog.records
            if r.name == "snippets.periodic_tasks.missed_runs_and_ha"
        ]
        assert roles == [  # a change of role is logged once, when it happens
            ("WARNING", "beat: this beat holds the "),  # probe
            ("WARNING", "beat: another beat holds the "),  # rival
            ("ERROR", "beat: lost the connection that holds the "),  # probe
            ("WARNING", "beat: another beat holds the "),  # probe
            ("WARNING", "beat: this beat holds the "),  # rival
        ]
        # A standby's session dropped: it cannot try the lock this tick, says so at DEBUG only
        # (no role changed: it was not sending), and tries again on a new connection next tick.
        caplog.set_level(logging.DEBUG, logger="snippets.periodic_tasks.missed_runs_and_ha")
        standby = probe._lock_connection.connection.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [standby])
        assert probe.is_leader() is False
        assert probe._lock_connection is None  # closed: the next tick opens a new one
        assert "beat: cannot try the lock 'celery-beat'" in caplog.text
        assert said() == (2, 2)
        assert probe.is_leader() is False  # a new session, and the lock is still the rival's
        assert probe._lock_connection is not None
        rival._close_lock_connection()  # the new leader stops: closing its connection frees it
        # ... once its server process has ended, a moment after the close (R3, loaded: the first
        # try still found it held): the old one, on a new connection, wins it on a later tick.
        wait_until(probe.is_leader, timeout=30, what="the old leader wins the lock back")
        assert said() == (3, 2)
    finally:
        probe._close_lock_connection()
        rival._close_lock_connection()
