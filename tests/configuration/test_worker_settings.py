"""Proof for docs/configuration/worker-settings.md: prefetch and child recycling, real workers."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
import redis
from celery import Celery

from snippets.configuration.worker_settings import leaky_task, record_run
from tests.configuration.helpers import (
    CELERY_DEFAULTS,
    EARLY_ACKS_MULTIPLIER_1,
    PROJECT,
    PrivateRedis,
    runs_of,
    settings_env,
    short_behind_long,
)
from tests.harness.redelivery import deliver_again
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # worker_process needs a network broker


@pytest.mark.antipattern("snippets/project/settings.py:celery_settings")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(Celery's defaults)",
    reason="the anti-pattern under test: prefetch and ack at Celery's defaults",
)
def test_why_at_the_defaults_a_short_task_waits_behind_a_long_one(worker_process, celery_app):
    """Celery's defaults: the busy worker holds the short task while worker B sits idle."""
    long_run, short_run, a, _b = short_behind_long(
        worker_process, celery_app, CELERY_DEFAULTS, prefetched=True
    )
    assert short_run.hostname == a.hostname  # stuck in A's buffer, B never saw it
    assert short_run.started_at >= long_run.finished_at  # it waited for the long task


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(the page's worker settings)",
    reason="the page's acks_late and prefetch multiplier, on top of the project's",
)
def test_acks_late_and_multiplier_1_leave_the_short_task_to_the_idle_worker(
    worker_process, celery_app
):
    """The project's settings: A reserves nothing while busy, so idle B runs the short task."""
    long_run, short_run, _a, b = short_behind_long(
        worker_process, celery_app, PROJECT, prefetched=False
    )
    assert short_run.hostname == b.hostname
    assert short_run.finished_at < long_run.finished_at  # ran while the long one still ran


@pytest.mark.antipattern("snippets/project/settings.py:celery_settings")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(early acks, multiplier 1)",
    reason="the anti-pattern under test: multiplier 1 without acks_late",
)
def test_why_with_early_acks_multiplier_1_still_holds_the_next_task(worker_process, celery_app):
    """Early acks: the running message is acked as it starts, which frees the one prefetch slot,
    so busy A reserves the short task anyway and idle B never gets it."""
    long_run, short_run, a, _b = short_behind_long(
        worker_process, celery_app, EARLY_ACKS_MULTIPLIER_1, prefetched=True
    )
    assert short_run.hostname == a.hostname  # held by busy A although B was idle
    assert short_run.started_at >= long_run.finished_at  # it waited for the long task


def leak_counts(wp, calls: int = 3) -> list[int]:
    return [leaky_task.apply_async((64,), queue=wp.queue).get(timeout=30) for _ in range(calls)]


@pytest.mark.antipattern(task=leaky_task)
def test_why_a_leak_grows_in_a_child_that_is_never_replaced(worker_process):
    """Without a recycling limit one child serves every call, and its cache keeps growing."""
    wp = worker_process(concurrency=1)
    [child] = wp.pool_pids()
    assert leak_counts(wp) == [1, 2, 3]
    assert wp.pool_pids() == [child]


@pytest.mark.deviation(
    "--max-tasks-per-child=2",
    reason="the page's flag with a limit small enough to see it (1000 in production)",
)
def test_max_tasks_per_child_replaces_the_child_and_frees_what_it_held(worker_process):
    """`[1, 2, 1]`, a new pid."""
    wp = worker_process(concurrency=1, args=["--max-tasks-per-child=2"])
    [first] = wp.pool_pids()
    assert leak_counts(wp) == [1, 2, 1]  # the third call ran in a fresh child
    pids = wait_until(lambda: wp.pool_pids() if wp.pool_pids() != [first] else None)
    assert first not in pids


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(production, worker_max_memory_per_child)",
    reason="a limit just above a fresh child's memory, so that one task crosses it",
)
def test_max_memory_per_child_replaces_the_child_past_the_limit(worker_process):
    """The limit is KiB of the child's resident memory, read after each task (billiard's
    pool.py, mem_rss): a child that grew past it is replaced, with what it held."""
    probe = worker_process(concurrency=1)
    [child] = probe.pool_pids()
    baseline_kib = psutil.Process(child).memory_info().rss // 1024
    probe.stop()
    limit = baseline_kib + 40_000  # about 40 MB above what a fresh child holds
    wp = worker_process(
        concurrency=1,
        env=settings_env("snippets.production.settings", CELERY_WORKER_MAX_MEMORY_PER_CHILD=limit),
    )
    [first] = wp.pool_pids()
    assert leaky_task.apply_async((1_000,), queue=wp.queue).get(timeout=30) == 1  # 1 MB: kept
    assert wp.pool_pids() == [first]
    assert leaky_task.apply_async((60_000,), queue=wp.queue).get(timeout=30) == 2  # past it
    wait_until(lambda: wp.pool_pids() not in ([], [first]), what="a new child")
    assert leaky_task.apply_async((1,), queue=wp.queue).get(timeout=30) == 1  # cache gone


def test_record_run_records_who_ran_the_message(celery_worker):
    """The instrument the proofs above rely on, on the in-thread worker."""
    result = record_run.delay("instrument", 0.0)
    assert result.get(timeout=30) > 0
    [run] = runs_of(result.id)
    assert run.key == "instrument"
    assert run.hostname  # the node that ran it
    assert run.finished_at >= run.started_at


@pytest.mark.proves_idempotent(task=record_run)
def test_record_run_writes_one_row_per_delivery(shared_prefork_worker):
    """The instrument counts deliveries, by design: the same message delivered again (same task
    id) adds exactly one row for its run and leaves the first run's row as it was; two rows for
    one task id is how the proofs here see a redelivery.

    Fails if a run wrote no row or two, or if its finish were written to another run's row (an
    update by task id, not by the row's pk)."""
    wp = shared_prefork_worker
    first = record_run.apply_async(("delivered-twice", 0.0), queue=wp.queue)
    assert first.get(timeout=30) > 0
    [run] = runs_of(first.id)
    assert deliver_again(wp, record_run, ("delivered-twice", 0.0), first.id) > 0  # a pid
    one, two = runs_of(first.id)
    assert (one.pk, one.started_at, one.finished_at) == (run.pk, run.started_at, run.finished_at)
    assert two.key == "delivered-twice"
    assert two.started_at >= one.finished_at
    assert two.finished_at >= two.started_at


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own: dropping its clients drops no other test's."""
    server = PrivateRedis(tmp_path)
    server.start()
    client = redis.Redis(port=server.port)
    wait_until(client.ping, ignore=(redis.ConnectionError,), what="the private redis-server")
    yield server
    server.stop()


def drop_connection_mid_task(worker_process, server: PrivateRedis, **overrides: object):
    """A late-acked 6 s task on a prefork worker (2 children) of `server`; once it runs, every
    broker connection is dropped (`CLIENT KILL`, as a proxy, a failover or a network blip
    does). Return the worker and the runs of that message, once one of them finished."""
    env = {"CELERY_BROKER_URL": server.url}
    if overrides:
        env |= settings_env("snippets.production.settings", **overrides)
    wp = worker_process(concurrency=2, env=env, ready=False)
    wp.wait_for_log(" ready.", timeout=60)
    app = Celery("snippets", set_as_current=False)  # the web process's side, on that broker
    app.config_from_object("snippets.production.settings", namespace="CELERY")
    app.conf.broker_read_url = app.conf.broker_write_url = server.url
    result = app.send_task(record_run.name, ("connection-loss", 6.0), queue=wp.queue)
    wait_until(lambda: runs_of(result.id), what="the task to start", context=wp)
    killed = redis.Redis(port=server.port).client_kill_filter(_type="normal", skipme=True)
    assert killed > 0
    wait_until(
        lambda: any(run.finished_at for run in runs_of(result.id)),
        what="a run of the task to finish",
        context=wp,
    )
    return wp, result


def test_a_connection_loss_stops_the_late_acked_task_before_it_runs_again(
    worker_process, private_redis
):
    """The recommended deployment (its settings, REMAP_SIGTERM=SIGQUIT): the running task is
    stopped when the connection drops, its message runs again from the start, one run ends."""
    wp, result = drop_connection_mid_task(worker_process, private_redis)
    log = wp.log()
    assert "Restoring 1 unacknowledged message(s)" in log  # kombu hands it back at once
    assert "cannot be acknowledged after a connection loss" in log  # consumer.py: cancel
    first, second = runs_of(result.id)
    assert first.finished_at is None  # stopped mid-run (SIGQUIT: billiard's TERM_SIGNAME)
    assert first.pid not in wp.pool_pids()  # its child is gone, replaced
    assert second.finished_at is not None


@pytest.mark.antipattern("snippets/project/settings.py:celery_settings")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(production, no cancel on connection loss)",
    reason="the anti-pattern under test: Celery 5.7's default",
)
def test_why_without_it_a_connection_loss_runs_the_task_twice_side_by_side(
    worker_process, private_redis
):
    """Celery 5.7's default: the task keeps running while its message, handed back to the
    queue, runs again beside it; both runs finish."""
    wp, result = drop_connection_mid_task(
        worker_process,
        private_redis,
        CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS=False,
    )
    assert "CPendingDeprecationWarning" in wp.log()  # Celery's warning at each connection loss
    first, second = wait_until(
        lambda: (runs := runs_of(result.id)) and all(r.finished_at for r in runs) and runs,
        what="both runs to finish",
        context=wp,
    )
    assert second.started_at < first.finished_at  # side by side: two effects, concurrently
