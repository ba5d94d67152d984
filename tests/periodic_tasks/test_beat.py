"""Proof for docs/periodic-tasks/beat.md: real `celery beat` subprocesses on a short interval.

Every beat publishes to a queue of the test's own (``options.queue``), consumed by a
`worker_process` or read straight from the broker, so the in-thread worker never sees it.
"""

import inspect
import json
import os
import re
import signal
import time
import zlib
from datetime import datetime, timedelta
from itertools import combinations, pairwise

import pytest

from snippets.periodic_tasks.beat import (
    CELERY_BEAT_SCHEDULE,
    rebuild_search_index,
    rebuild_search_index_unlocked,
    refresh_rates,
)
from snippets.periodic_tasks.crontab_and_timezones import RecordingScheduler, VirtualClock
from snippets.periodic_tasks.models import PeriodicRun
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until
from tests.periodic_tasks.helpers import confirmed_sends, every_second, queue_length, read_queue
from tests.task_design.helpers import task_pid

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("broker")]


def runs(entry: str) -> list[PeriodicRun]:
    return list(PeriodicRun.objects.filter(entry=entry).order_by("started_at"))


def test_the_settings_schedule_sends_every_5_minutes_with_an_expiry(celery_app):
    """The snippet's own CELERY_BEAT_SCHEDULE, in Celery's scheduler on a virtual clock; each
    entry names a task of the project and arguments that task takes."""
    from celery import Celery

    app = Celery("settings-check", set_as_current=False)
    app.conf.beat_schedule = CELERY_BEAT_SCHEDULE
    start = datetime(2026, 11, 24, 6, 0).astimezone()
    clock = VirtualClock(start, app)
    app.now = clock
    scheduler = RecordingScheduler(app, clock)
    scheduler.update_from_dict(app.conf.beat_schedule)
    for _tick in range(10_000):  # a zero interval would tick every millisecond: fail, not hang
        if clock.now >= start + timedelta(minutes=31):
            break
        clock.now += timedelta(seconds=max(scheduler.tick(), 0.001))
    else:
        pytest.fail("31 minutes took 10,000 ticks of beat's loop: an interval of zero?")
    sent = [name for name, _when in scheduler.sent]
    assert sent.count("refresh-rates") == 6
    assert sent.count("rebuild-search-index") == 2
    for name, entry in scheduler.schedule.items():
        interval = entry.schedule.run_every.total_seconds()
        assert 0 < entry.options["expires"] < interval, name  # stale before the next send
        task = celery_app.tasks[entry.task]  # KeyError: a send no worker could run
        inspect.signature(task.run).bind(*entry.args, **entry.kwargs)  # called as beat calls it
        assert entry.args == [name], name  # the stand-in records the entry that sent it


def test_the_locked_job_has_a_finite_budget_below_the_visibility_timeout(celery_app):
    """(2) on the lock: soft below hard, both below the broker's visibility timeout, set on the
    task itself (a rebuild's own budget, not the project's default)."""
    visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
    task = rebuild_search_index
    assert 0 < task.soft_time_limit < task.time_limit < visibility


@pytest.mark.proves_idempotent(task=refresh_rates)
def test_one_beat_sends_on_schedule_and_each_send_runs_once(beat_process, shared_prefork_worker):
    """every publish beat confirms (its DEBUG log: "sent. id->…") runs exactly once; sends of a 1 s
    entry are never less than ~1 s apart. A send delivered again (the same id) finds its row:
    the same result, no second row (`create` instead of `get_or_create` would add one).

    The session's worker runs the sends (its log holds other tests' lines too: each count is of
    one task id); the test ends once it holds none of them."""
    worker = shared_prefork_worker
    beat = beat_process(every_second(refresh_rates, worker.queue, "refresh-rates", expires=30))
    wait_until(lambda: len(runs("refresh-rates")) >= 3, what="three runs")
    beat.stop()
    sent = beat.confirmed("refresh-rates")
    ran = lambda: [run.task_id for run in runs("refresh-rates")]  # noqa: E731
    wait_until(lambda: {s.id for s in sent} <= set(ran()), what="every confirmed send ran")
    assert len(ran()) == len(set(ran()))
    log = worker.log()  # no send ran twice (a row per send: the worker's log counts the runs)
    assert all(log.count(f"{refresh_rates.name}[{i}] received") == 1 for i in ran())
    assert len(ran()) - len(sent) in (0, 1)  # (1: a publish the stop cut before its log line)
    # beat never sends early: consecutive sends of a 1 s entry are at least ~1 s apart
    assert all(b.at - a.at >= timedelta(seconds=0.95) for a, b in pairwise(sent))

    first = refresh_rates.AsyncResult(sent[0].id)
    pk = first.get(timeout=30)
    again = redeliver(worker, refresh_rates, first, ("refresh-rates",), expires=30)
    assert (again["status"], again["result"]) == ("SUCCESS", pk)
    # Rows of this send's id, not of the entry: a send the stop cut before its log line may
    # still be running, and adds a row of its own.
    assert PeriodicRun.objects.filter(task_id=first.id).count() == 1
    idle(worker, refresh_rates)  # a send the stop cut may still wait or run: not past this test


def idle(worker, task) -> None:
    """Until `worker`'s queue is empty and it holds no request of `task` (active or reserved)."""
    wait_until(lambda: queue_length(worker.queue) == 0, what="the queue drained", context=worker)

    def holds() -> list[dict] | None:
        """Its requests of `task`; None while either reply is missing (not known to be idle)."""
        inspect = worker.app.control.inspect([worker.hostname], timeout=1)
        active = (inspect.active() or {}).get(worker.hostname)
        reserved = (inspect.reserved() or {}).get(worker.hostname)
        if active is None or reserved is None:
            return None
        return [r for r in [*active, *reserved] if r["name"] == task.name]

    wait_until(lambda: holds() == [], what=f"no {task.name} left on the worker", context=worker)


@pytest.mark.antipattern("snippets/production/systemd/celery-beat.service")
@pytest.mark.deviation("-B", reason="the anti-pattern under test: a beat embedded in each worker")
@pytest.mark.deviation("--schedule", reason="each embedded beat's schedule file, in tmp_path")
@pytest.mark.deviation("--loglevel=DEBUG", reason="beat confirms each publish only at DEBUG")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=tests.periodic_tasks.beat_settings",
    reason="celery.env's settings plus the test's one-second schedule",
)
@pytest.mark.deviation("PERIODIC_TEST_SCHEDULE", reason="that schedule, read by beat_settings")
def test_why_two_workers_started_with_B_send_every_run_twice(worker_process, queue_name, tmp_path):
    """`-B` embeds a beat in each worker: two such workers are two beats, and both send."""
    schedule = json.dumps(every_second(refresh_rates, queue_name, "refresh-rates"))
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.periodic_tasks.beat_settings",
        "PERIODIC_TEST_SCHEDULE": schedule,
    }
    workers = [
        worker_process(
            args=["-B", f"--schedule={tmp_path / f'beat-{n}'}", "--loglevel=DEBUG"], env=env
        )
        for n in range(2)
    ]
    sent = lambda w: confirmed_sends(w.log(), "refresh-rates")  # noqa: E731
    wait_until(lambda: all(len(sent(w)) >= 2 for w in workers), what="both embedded beats sent")
    for w in workers:
        w.stop()
    ids = {m["id"] for m in read_queue(queue_name)}
    first, second = ({s.id for s in sent(w)} for w in workers)
    assert first <= ids
    assert second <= ids
    assert len(ids) - len(first | second) in (0, 1, 2)  # (a publish cut before its log line)


def test_a_stale_send_past_expires_is_never_run(beat_process, worker_process, queue_name):
    """No worker for a while: the sends pile up. When one comes back, those without `expires`
    all run (a burst of identical runs); the expired ones never run. Redis leaves them to the
    worker, which discards them (state REVOKED); RabbitMQ drops them itself (message TTL)."""
    from snippets.project.celery import app

    schedule = {
        **every_second(refresh_rates, queue_name, "with-expires", expires=1),
        **every_second(refresh_rates, queue_name, "without-expires"),
    }
    beat = beat_process(schedule)
    beat.wait_for(lambda b: len(b.confirmed("with-expires")) >= 2)
    beat.wait_for(lambda b: len(b.confirmed("without-expires")) >= 2)
    beat.stop()
    stale_with = {s.id for s in beat.confirmed("with-expires")}
    stale_without = {s.id for s in beat.confirmed("without-expires")}
    time.sleep(1.5)  # every send with expires=1 is now past its expiry
    worker = worker_process(queue=queue_name)
    ran = lambda: {run.task_id for run in runs("without-expires")}  # noqa: E731
    wait_until(lambda: stale_without <= ran(), what="the burst ran")
    wait_until(lambda: queue_length(queue_name) == 0, what="the queue drained")

    def discarded() -> set[str]:
        return set(re.findall(r"Discarding revoked task: \S+refresh_rates\[(\S+)\]", worker.log()))

    if app.conf.broker_url.startswith("amqp"):
        assert not any(i in worker.log() for i in stale_with)  # never even delivered
        assert {refresh_rates.AsyncResult(i).state for i in stale_with} == {"PENDING"}
    else:
        wait_until(lambda: stale_with <= discarded(), what="every expired send discarded")
        assert {refresh_rates.AsyncResult(i).state for i in stale_with} == {"REVOKED"}
    assert len(ran()) >= 2  # the stale sends without expires all ran, one after another
    assert runs("with-expires") == []  # never run


@pytest.mark.services("postgres")
@pytest.mark.antipattern(task=rebuild_search_index_unlocked)
@pytest.mark.deviation(
    "SNIPPETS_REBUILD_SECONDS=2.5", reason="the stand-in's run takes longer than its interval"
)
def test_why_a_run_longer_than_its_interval_overlaps(beat_process, worker_process):
    """A 2.5 s job sent every second: without a lock, runs overlap; with it, never."""
    worker = worker_process(concurrency=4, env={"SNIPPETS_REBUILD_SECONDS": "2.5"})
    schedule = {}
    for task, entry in (
        (rebuild_search_index_unlocked, "unlocked"),
        (rebuild_search_index, "locked"),
    ):
        schedule |= every_second(task, worker.queue, entry, expires=5)
    beat = beat_process(schedule)
    finished = lambda e: [r for r in runs(e) if r.finished_at]  # noqa: E731
    wait_until(lambda: len(finished("unlocked")) >= 3 and len(finished("locked")) >= 2, 90)
    worker.wait_for_log("still holds the lock; skipping this run")
    beat.stop()

    def overlapping(entry: str) -> list:
        done = finished(entry)
        return [
            (a, b)
            for a, b in combinations(done, 2)
            if a.started_at < b.finished_at and b.started_at < a.finished_at
        ]

    assert overlapping("unlocked")  # two runs of the same job at the same time
    assert overlapping("locked") == []


def advisory_lock_held(name: str) -> bool:
    """Whether any session holds the job's advisory lock (a key below 2**32: objid, classid 0)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0"
            " AND objid::bigint = %s AND granted AND database = ("
            "SELECT oid FROM pg_database WHERE datname = current_database())",
            [zlib.crc32(name.encode())],
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.services("postgres")
@pytest.mark.proves_idempotent(task=rebuild_search_index)
@pytest.mark.deviation(
    "SNIPPETS_REBUILD_SECONDS=60",
    reason="on the first worker: the stand-in's run lasts until the test kills it",
)
def test_a_killed_run_frees_the_lock_and_the_redelivery_rebuilds_once(
    worker_process, shared_prefork_worker
):
    """The same message delivered again while the first run works finds the lock taken and
    skips. Then the pool child running the first run is SIGKILLed: PostgreSQL ends its session
    and frees the lock with it, and the message delivered again (the same id, as the broker
    redelivers it) rebuilds, once. Without the lock the first redelivery would rebuild too; a
    lock that outlived the killed process would make the last one skip.

    (The last redelivery goes to a second worker, the session's, as the deployment starts it:
    there the stand-in's run takes its usual second, not the first worker's minute. The lock
    lives in PostgreSQL, shared by every worker.)"""
    worker = worker_process(concurrency=2, env={"SNIPPETS_REBUILD_SECONDS": "60"})
    other = shared_prefork_worker
    entry = "rebuild-redelivered"
    first = rebuild_search_index.apply_async((entry,), queue=worker.queue)
    pid = task_pid(first)
    wait_until(lambda: runs(entry), what="the first run's row", context=worker)

    skipped = redeliver(worker, rebuild_search_index, first, (entry,))
    assert (skipped["status"], skipped["result"]) == ("SUCCESS", None)
    assert f"{entry}[{first.id}]: the previous run still holds the lock" in worker.log()
    assert len(runs(entry)) == 1

    os.kill(pid, signal.SIGKILL)
    worker.wait_for_log(f"pid:{pid} exited with 'signal 9 (SIGKILL)'")
    wait_until(lambda: not advisory_lock_held(entry), what="the lock freed", context=worker)
    rebuilt = redeliver(other, rebuild_search_index, first, (entry,))
    killed, done = runs(entry)
    assert (rebuilt["status"], rebuilt["result"]) == ("SUCCESS", done.pk)
    assert killed.finished_at is None  # the killed run never finished...
    assert done.finished_at is not None  # ...and the redelivered one rebuilt, once


@pytest.mark.services("postgres")
def test_a_lock_whose_session_died_does_not_mask_the_jobs_own_error(caplog):
    """The unlock in `finally` fails on a dead session; the job's exception still surfaces."""
    from django.db import connection, connections

    from snippets.periodic_tasks.beat import single_instance

    killer = connections.create_connection("default")
    try:
        with (
            pytest.raises(ValueError, match="the job's own error"),
            single_instance("lost-session") as acquired,
        ):
            assert acquired
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                (pid,) = cursor.fetchone()
            with killer.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            raise ValueError("the job's own error")
    finally:
        killer.close()
        connection.close()  # Django opens a fresh session for the next query
    assert "lost-session: connection lost before unlock" in caplog.text
