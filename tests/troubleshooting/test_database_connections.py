"""Proof for docs/troubleshooting/database-connections.md: prefork workers on a private
PostgreSQL cluster of the test's own (`tests.harness.postgres`) with a small `max_connections`,
so filling it refuses no other test's connection."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import psycopg
import pytest
from celery.result import ResultSet

from snippets.troubleshooting.database_connections import (
    connection_headroom,
    for_prefork_workers,
    slow_query,
)
from tests.harness.postgres import PrivatePostgres
from tests.harness.wait import wait_until

TOO_MANY = "FATAL:  sorry, too many clients already"
SETTINGS = "tests.troubleshooting.private_db_settings"
MAX_CONNECTIONS = 4


def settings_deviation(test: object) -> object:
    """The worker's default database is the test's private cluster. (The marks are spelt out,
    not built from SETTINGS: docs/hooks/proofs.py reads them from this body for the page, and
    the harness refuses a worker whose settings differ from the declared ones.)"""
    test = pytest.mark.deviation(
        "DJANGO_SETTINGS_MODULE=tests.troubleshooting.private_db_settings",
        reason="the default database is the test's private cluster (max_connections 4)",
    )(test)
    return pytest.mark.deviation("TS_PG_PORT", reason="the private cluster's port")(test)


@pytest.fixture
def postgres() -> Iterator[Callable[..., PrivatePostgres]]:
    """Factory: a started private cluster with `max_connections` (4 by default), no reserved
    slots, every connection logged; stopped after the test."""
    clusters: list[PrivatePostgres] = []

    def start(max_connections: int = MAX_CONNECTIONS) -> PrivatePostgres:
        pg = PrivatePostgres(
            max_connections=max_connections,
            superuser_reserved_connections=0,
            log_connections="on",
        )
        clusters.append(pg)
        return pg.start()

    yield start
    for pg in clusters:
        pg.stop()


def env_for(pg: PrivatePostgres, **extra: str) -> dict[str, str]:
    return {"DJANGO_SETTINGS_MODULE": SETTINGS, "TS_PG_PORT": str(pg.port), **extra}


def sessions(pg: PrivatePostgres) -> int:
    """Client sessions open on the cluster now, not counting this one."""
    with psycopg.connect(pg.conninfo) as conn:
        return conn.execute(
            "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()[0]


def connections_made(pg: PrivatePostgres) -> int:
    """Sessions the server authorized since it started (log_connections)."""
    return len(re.findall(r"connection authorized: user=", pg.log()))


# How long each query of the too-many-clients proofs holds its connection: long enough that
# every task has connected (or been refused) while the first still holds its slot. 2 s was
# not always: a loaded CI run (stop 28) saw one query end, free its slot and let a late task
# in, 5 refusals where 6 are due.
OVERLAP = 6.0


def run_all(wp: object, count: int, seconds: float) -> list[object]:
    """`count` slow queries at once on the worker's queue: each result, or the exception."""
    results = [slow_query.apply_async((seconds,), queue=wp.queue) for _ in range(count)]
    ResultSet(results).join(timeout=120, propagate=False)
    return [r.result for r in results]


@pytest.mark.services("postgres")
@settings_deviation
@pytest.mark.proves_idempotent(task=slow_query)
def test_prefork_concurrency_above_max_connections_fails_tasks_with_too_many_clients(
    worker_process, postgres, django_db_blocker
):
    """six pool processes, four connection slots: six queries at once, and two tasks fail
    with `OperationalError` … `FATAL:  sorry, too many clients already` in the worker's log. A
    concurrency within the server's headroom (the page's check) runs all six, four at a time."""
    pg = postgres()
    wp = worker_process(concurrency=6, env=env_for(pg))
    outcomes = run_all(wp, 6, OVERLAP)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failures) == 2
    assert all(type(f).__name__ == "OperationalError" for f in failures)
    assert all(TOO_MANY in str(f) for f in failures)
    wp.wait_for_log(TOO_MANY)
    # CONN_MAX_AGE 600 in the worker's settings, and still: the fixup closes after each task.
    # A task's result is stored before its process closes the connection: until then the four
    # slots can still be full, and this probe is refused like any other client.
    wait_until(
        lambda: sessions(pg) == 0,
        what="no session left: the fixup closes after a task",
        ignore=(psycopg.OperationalError,),
    )

    # The fix: concurrency from the server's headroom (with nothing else connected here).
    # This check's own session is counted. A session closed just before (the probe's) can stay
    # listed in pg_stat_activity while its backend exits: wait for the count to settle.
    with django_db_blocker.unblock():  # a database of its own, outside the test's
        headroom = wait_until(
            lambda: (h := headroom_of(pg)) == MAX_CONNECTIONS - 1 and h,
            what="the headroom of an idle cluster: max_connections minus this check's session",
        )
    fitted = worker_process(concurrency=headroom, env=env_for(pg))
    assert run_all(fitted, 6, 1) == [1] * 6
    assert TOO_MANY not in fitted.log()
    first = slow_query.apply_async((0,), queue=fitted.queue)
    assert first.get(timeout=30) == 1
    again = slow_query.apply_async((0,), queue=fitted.queue, task_id=first.id)
    assert again.get(timeout=30) == 1  # redelivered: a read-only query runs again, same result


def headroom_of(pg: PrivatePostgres) -> int:
    from django.db import connections

    connections.settings["private"] = {**connections.settings["default"], **pg.database()}
    try:
        return connection_headroom("private")
    finally:
        connections["private"].close()
        del connections["private"]
        del connections.settings["private"]


@pytest.mark.services("postgres")
@settings_deviation
@pytest.mark.deviation("TS_DB_POOL", reason="Django's connection pool, OPTIONS['pool'] = True")
@pytest.mark.deviation("TS_PREFORK_DATABASE", reason="the page's DATABASES entry for workers")
def test_django_pool_in_prefork_workers_opens_min_size_connections_per_task(
    worker_process, postgres
):
    """`OPTIONS["pool"] = True` in a prefork worker: Celery's fixup closes the pool around every
    task, so each task opens a new pool that fills to `min_size` (4) connections and uses one:
    two running tasks hold eight sessions. The page's worker entry (no pool): one per task."""
    pg = postgres(20)
    pooled = worker_process(concurrency=2, env=env_for(pg, TS_DB_POOL="true"))
    running = [slow_query.apply_async((8,), queue=pooled.queue) for _ in range(2)]
    # Eight sessions exist only while both 8 s tasks run: the deadline only bounds the wait.
    wait_until(lambda: sessions(pg) >= 2 * 4, 60, what="two pools of min_size 4, two tasks")
    assert ResultSet(running).join(timeout=60) == [1, 1]
    wait_until(lambda: sessions(pg) == 0, what="every pool closed after its task: none kept")

    fixed = worker_process(
        concurrency=2, env=env_for(pg, TS_DB_POOL="true", TS_PREFORK_DATABASE="1")
    )
    made = connections_made(pg)
    assert run_all(fixed, 6, 0.5) == [1] * 6
    assert connections_made(pg) - made == 6  # one per task


def test_the_prefork_entry_drops_only_the_pool():
    """for_prefork_workers() removes OPTIONS["pool"] and keeps every other option."""
    database = {"NAME": "app", "OPTIONS": {"pool": {"min_size": 2}, "sslmode": "require"}}
    assert for_prefork_workers(database) == {"NAME": "app", "OPTIONS": {"sslmode": "require"}}
    assert database["OPTIONS"]["pool"] == {"min_size": 2}  # the web's settings are untouched
