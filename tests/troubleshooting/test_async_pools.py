"""Proof for docs/troubleshooting/async-pools.md: real `celery worker --pool=gevent`
subprocesses on the configured broker and PostgreSQL, and a private PostgreSQL cluster with a
small `max_connections` for the connections entry."""

from __future__ import annotations

import asyncio

import pytest
from django.core.exceptions import SynchronousOnlyOperation

from snippets.troubleshooting.async_pools import (
    fetch_rates,
    for_gevent_workers,
    refresh_rates,
    refresh_rates_in_loop,
    run_coroutine,
)
from snippets.troubleshooting.database_connections import slow_query
from tests.harness.redelivery import deliver_again
from tests.troubleshooting.test_database_connections import (
    OVERLAP,
    connections_made,
    env_for,
    postgres,  # noqa: F401 (the fixture)
    run_all,
    sessions,
    settings_deviation,
)

pytestmark = pytest.mark.services("postgres")
TOO_MANY = "FATAL:  sorry, too many clients already"
SYNC_ONLY = "You cannot call this from an async context - use a thread or sync_to_async."
RATES = {"EUR": 1.0, "USD": 1.08}
gevent_pool = pytest.mark.deviation("--pool=gevent", reason="the page's subject: the gevent pool")
WAIT = {"SNIPPETS_FETCH_RATES_SECONDS": "5"}  # the stand-in call's wait, on the worker


def received(task: object, task_id: str) -> str:
    return f"Task {task.name}[{task_id}] received"


@gevent_pool
@pytest.mark.deviation(
    "SNIPPETS_FETCH_RATES_SECONDS=5",
    reason="the stand-in call waits 5 s, so an ORM task runs beside it while it still waits",
)
@pytest.mark.django_db(transaction=True)  # the worker's database: the test database
@pytest.mark.antipattern(task=refresh_rates_in_loop)
@pytest.mark.proves_idempotent(task=refresh_rates)
def test_an_event_loop_in_one_greenlet_fails_every_orm_call_beside_it(worker_process):
    """on gevent the ORM alone works; while one task runs `asyncio.run()`, an ORM task beside
    it fails with `SynchronousOnlyOperation: You cannot call this from an async context - use a
    thread or sync_to_async.` The loop in gevent's native thread pool leaves the ORM working."""
    wp = worker_process(pool="gevent", concurrency=4, env=WAIT)
    assert slow_query.apply_async((0,), queue=wp.queue).get(timeout=30) == 1  # no loop: fine

    looping = refresh_rates_in_loop.apply_async(queue=wp.queue)
    wp.wait_for_log(received(refresh_rates_in_loop, looping.id))
    with pytest.raises(SynchronousOnlyOperation, match=SYNC_ONLY):
        slow_query.apply_async((0,), queue=wp.queue).get(timeout=30)
    wp.wait_for_log(f"SynchronousOnlyOperation: {SYNC_ONLY}")
    assert looping.get(timeout=30) == RATES  # the loop's own task succeeds

    threaded = refresh_rates.apply_async(queue=wp.queue)
    wp.wait_for_log(received(refresh_rates, threaded.id))
    assert slow_query.apply_async((0,), queue=wp.queue).get(timeout=30) == 1
    assert not threaded.ready()  # the ORM task ran while the coroutine was still waiting
    assert threaded.get(timeout=30) == RATES
    # Read-only: a rerun returns the same (read from the worker's log: .get() shows the first).
    assert deliver_again(wp, refresh_rates, (), threaded.id) == RATES
    assert wp.log().count("raised unexpected: SynchronousOnlyOperation") == 1, wp.log()


@gevent_pool
@settings_deviation
@pytest.mark.deviation("TS_GEVENT_POOL_SIZE", reason="the page's gevent DATABASES entry")
def test_many_greenlets_open_one_connection_each_until_too_many_clients(worker_process, postgres):  # noqa: F811
    """ten greenlets querying at once open ten connections: four slots, and six tasks fail
    with `FATAL:  sorry, too many clients already`. With the page's pool entry (at most three
    connections) the same ten tasks all run, on three connections."""
    pg = postgres()
    green = worker_process(pool="gevent", concurrency=10, env=env_for(pg))
    outcomes = run_all(green, 10, OVERLAP)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failures) == 10 - 4
    assert all(TOO_MANY in str(f) for f in failures)
    green.wait_for_log(TOO_MANY)

    made = connections_made(pg)
    pooled = worker_process(pool="gevent", concurrency=10, env=env_for(pg, TS_GEVENT_POOL_SIZE="3"))
    assert run_all(pooled, 10, 1) == [1] * 10
    assert connections_made(pg) - made <= 3
    assert 1 <= sessions(pg) <= 3  # kept by the pool for the next tasks
    assert TOO_MANY not in pooled.log()


def test_the_gevent_entry_pools_at_most_max_size_connections():
    """for_gevent_workers(): a pool of `max_size`, CONN_MAX_AGE 0 (Django refuses a pool
    with persistent connections), the other options kept."""
    database = {"NAME": "app", "CONN_MAX_AGE": 600, "OPTIONS": {"sslmode": "require"}}
    entry = for_gevent_workers(database, 10)
    assert entry["CONN_MAX_AGE"] == 0
    assert entry["OPTIONS"] == {
        "sslmode": "require",
        "pool": {"min_size": 1, "max_size": 10, "timeout": 30},
    }


def test_run_coroutine_runs_the_loop_in_another_thread():
    """run_coroutine() returns the coroutine's value; the loop was never this thread's. Both
    tasks' bodies give the rates called directly too (the gevent worker above runs them, but a
    worker that needs the hard shutdown at teardown loses its coverage data)."""
    assert run_coroutine(fetch_rates()) == RATES
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert refresh_rates_in_loop.run() == RATES
    assert refresh_rates.run() == RATES
