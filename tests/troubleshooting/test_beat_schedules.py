"""Proof for docs/troubleshooting/beat-schedules.md: real `celery beat` subprocesses (Celery's
PersistentScheduler and django-celery-beat's DatabaseScheduler) on a one-second schedule,
publishing to a queue of the test's own; the crontab entry on Celery's scheduler with a
virtual clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from celery.schedules import crontab
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django_celery_beat.models import PeriodicTask

from snippets.periodic_tasks.beat import refresh_rates
from snippets.periodic_tasks.crontab_and_timezones import NIGHTLY_WITHOUT_A_MINUTE, beat_sends
from snippets.troubleshooting.beat_schedules import (
    REMOVED_ENTRIES,
    Migration,
)
from tests.harness.celery import delete_queues, queue_length
from tests.harness.wait import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("broker")]

DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
EVERY_MINUTE_OF_HOUR_3 = "<crontab: * 3 * * * (m/h/dM/MY/d)>"


@pytest.fixture
def queue(celery_app):
    """A queue of the test's own for the beats' sends; deleted after."""
    name = f"ts-beat-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(celery_app, name)


def schedule(queue: str, *entries: str) -> dict[str, dict]:
    """A beat schedule (`beat_process`'s JSON form) sending each entry every second to `queue`."""
    entry = {"task": refresh_rates.name, "seconds": 1, "options": {"queue": queue}}
    return {e: {**entry, "args": [e]} for e in entries}


def run_migration() -> None:
    """The snippet's migration as `migrate` runs it: its RunPython on the historical models of
    the state it depends on (their deletes send no signal), in a schema editor."""
    loader = MigrationLoader(connection)
    assert Migration.dependencies == loader.graph.leaf_nodes("django_celery_beat")  # the latest
    state = loader.project_state(Migration.dependencies)
    with connection.schema_editor() as editor:
        for operation in Migration.operations:
            operation.database_forwards("yourapp", editor, state, state)


def stopped_sending(beat: object, entry: str, others: int = 3) -> bool:
    """`others` sends of other entries logged after the last send of `entry`."""
    sends = beat.sends()
    last = max((i for i, e in enumerate(sends) if e == entry), default=-1)
    return len(sends[last + 1 :]) >= others


def test_why_crontab_hour_3_runs_every_minute_of_that_hour():
    """`crontab(hour=3)` prints as `* 3 * * *`; over a day Celery's scheduler sends it 60
    times. With `minute=0`: `0 3 * * *`, once."""
    assert repr(crontab(hour=3)) == EVERY_MINUTE_OF_HOUR_3
    start, end = datetime(2026, 7, 14, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC)
    assert len(beat_sends(NIGHTLY_WITHOUT_A_MINUTE, "UTC", start=start, end=end)) == 60

    fixed = {"nightly-cleanup": {**NIGHTLY_WITHOUT_A_MINUTE["nightly-cleanup"]}}
    fixed["nightly-cleanup"]["schedule"] = crontab(hour=3, minute=0)
    assert repr(fixed["nightly-cleanup"]["schedule"]) == "<crontab: 0 3 * * * (m/h/dM/MY/d)>"
    assert len(beat_sends(fixed, "UTC", start=start, end=end)) == 1


@pytest.mark.antipattern("snippets/production/systemd/celery-beat.service")
def test_why_two_beats_send_every_entry_twice(beat_process, celery_app, queue):
    """Two beats with one schedule: each sends the entry every second, so the queue holds the
    sends of both; each beat alone never sends an entry twice in one period."""
    first, second = (beat_process(schedule(queue, "refresh-rates")) for _ in range(2))
    for beat in (first, second):
        beat.wait_for(lambda b: len(b.confirmed("refresh-rates")) >= 2)
    for beat in (first, second):
        beat.stop()
    sent = [beat.confirmed("refresh-rates") for beat in (first, second)]
    ids = [{s.id for s in sends} for sends in sent]
    assert not ids[0] & ids[1]  # two different messages per period, one from each beat
    wait_until(
        lambda: queue_length(celery_app, queue) >= len(ids[0] | ids[1]),
        what="every send of both beats in the queue",
    )
    for sends in sent:  # one beat: one send per one-second period
        assert all(b.at - a.at >= timedelta(seconds=0.95) for a, b in pairwise(sends))


@pytest.mark.services("postgres")
@pytest.mark.deviation(
    "PERIODIC_TEST_SCHEDULER",
    reason="the page's subject: CELERY_BEAT_SCHEDULER set to django-celery-beat's "
    "DatabaseScheduler (the unit's settings keep Celery's file scheduler)",
)
def test_why_an_entry_removed_from_settings_is_still_sent_by_the_database_scheduler(
    beat_process, queue
):
    """Beat copies settings entries into PeriodicTask rows. Removed from the settings, the
    entry is still sent after a restart; the snippet's migration, run as `migrate` runs it
    while that beat runs, stops it there (the beat polls the timestamp the migration writes),
    and a beat started after it never sends it."""
    [removed] = REMOVED_ENTRIES
    db = {"PERIODIC_TEST_SCHEDULER": DATABASE_SCHEDULER}
    beat = beat_process(schedule(queue, "kept", removed), env=db)
    beat.wait_for(lambda b: b.sends(removed) and b.sends("kept"))
    beat.kill()  # (a SIGTERM landing in one of its queries can hang it until the SIGKILL)
    assert PeriodicTask.objects.filter(name=removed, enabled=True).exists()

    after = schedule(queue, "kept")  # the entry deleted from CELERY_BEAT_SCHEDULE
    beat = beat_process(after, env=db)
    beat.wait_for(lambda b: len(b.sends(removed)) >= 2)  # still sent, every second
    assert f"Scheduler: Sending due task {removed} ({refresh_rates.name})" in beat.log()

    run_migration()  # while this beat runs: it reads PeriodicTasks' timestamp and reloads
    assert not PeriodicTask.objects.filter(name=removed).exists()
    beat.wait_for(lambda b: stopped_sending(b, removed), timeout=30)
    beat.kill()
    beat = beat_process(after, env=db)
    beat.wait_for(lambda b: len(b.sends("kept")) >= 3)
    beat.kill()
    assert beat.sends(removed) == []
