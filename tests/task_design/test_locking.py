"""Proof for docs/task-design/locking.md: one run at a time; a crash does not leave the lock."""

import os
import signal
import time
import uuid

import pytest
import redis

from snippets.task_design.locking import (
    LOCK_TTL,
    TIME_LIMIT,
    advisory_lock,
    lock_id,
    naive_redis_lock,
    rebuild_search_index,
    rebuild_with_advisory_lock,
    redis_lock,
)
from snippets.task_design.models import JobRun
from tests.harness.wait import wait_until
from tests.task_design.helpers import task_pid

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(redis_url):
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
def job() -> str:
    return f"td-job-{uuid.uuid4().hex[:8]}"


def runs(job: str) -> int:
    return JobRun.objects.filter(job=job).count()


def test_each_job_has_a_soft_limit_below_its_hard_limit_below_the_lock_and_redelivery(
    celery_app,
):
    """(1) on the Redis task, and Verify: each rebuild's own budget is finite and soft first
    (the soft limit raises inside the `with`, so the lock is released; the hard limit kills
    the child, and the lock stays until its TTL); the hard limit is below the Redis lock's TTL
    and the broker's visibility timeout. The proofs above do not wait 50 s for a limit."""
    visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
    for task in (rebuild_search_index, rebuild_with_advisory_lock):
        assert 0 < task.soft_time_limit < task.time_limit < visibility, task.name
    assert rebuild_search_index.time_limit == TIME_LIMIT < LOCK_TTL


@pytest.mark.services("redis", "broker")
def test_two_concurrent_runs_one_runs_the_other_skips(shared_prefork_worker, client, job):
    """Redis lock: one `done`, one `skipped`, one row."""
    queue = shared_prefork_worker.queue
    first = rebuild_search_index.apply_async((job,), queue=queue)
    wait_until(lambda: client.exists(f"lock:{job}"), what="the first run's lock")
    second = rebuild_search_index.apply_async((job,), queue=queue)

    assert second.get(timeout=60) == "skipped"
    assert first.get(timeout=60) == "done"
    assert runs(job) == 1
    assert f"{job}: another run holds lock:{job}, skipping" in shared_prefork_worker.log()


@pytest.mark.services("postgres", "broker")
def test_two_concurrent_runs_one_holds_the_advisory_lock(shared_prefork_worker, job):
    """the same with PostgreSQL."""
    queue = shared_prefork_worker.queue
    first = rebuild_with_advisory_lock.apply_async((job,), queue=queue)
    task_pid(first)
    time.sleep(0.5)  # past the lock statement
    second = rebuild_with_advisory_lock.apply_async((job,), queue=queue)

    assert second.get(timeout=60) == "skipped"
    assert first.get(timeout=60) == "done"
    assert runs(job) == 1


@pytest.mark.services("redis", "broker")
@pytest.mark.proves_idempotent(task=rebuild_search_index)
def test_a_killed_holder_leaves_the_redis_lock_only_until_it_expires(
    shared_prefork_worker, client, job
):
    """SIGKILL: no finally runs, the key stays, and expires after its TTL; then a run works.

    The run again after the kill (the project's retry on worker loss) is skipped: one run's
    row. A task that did not skip when the lock is held would write a second one."""
    wp = shared_prefork_worker
    lock = f"lock:{job}"
    killed = rebuild_search_index.apply_async((job,), queue=wp.queue)
    pid = task_pid(killed)
    # The run takes the lock, then writes its row: wait for the row, so the kill lands in the
    # work (a kill between the two would leave the lock and no row; R6 of stop 26 hit it).
    wait_until(lambda: runs(job) == 1, what="the run's row, written under the lock")
    os.kill(pid, signal.SIGKILL)
    # The dead holder's lock is still there, expiring, and outlasts the hard time limit.
    assert TIME_LIMIT < client.ttl(lock) <= LOCK_TTL

    # The project retries a run lost with its worker (here after 2 s): the retry finds the
    # dead holder's lock and skips. Nothing rebuilt the index: the lock outlived its holder.
    assert killed.get(timeout=60) == "skipped"
    assert f"[{killed.id}] retry: Retry in 2s: WorkerLostError" in wp.log()
    assert runs(job) == 1  # the killed run's row (no transaction around it)
    client.expire(lock, 1)  # the clock jumps to the end of the TTL instead of waiting 90 s
    wait_until(lambda: not client.exists(lock), timeout=10, what="the lock to expire")
    assert rebuild_search_index.apply_async((job,), queue=wp.queue).get(timeout=60) == "done"
    assert runs(job) == 2


@pytest.mark.services("postgres", "broker")
@pytest.mark.proves_idempotent(task=rebuild_with_advisory_lock)
def test_a_killed_holder_releases_the_advisory_lock_at_once(shared_prefork_worker, job):
    """SIGKILL closes the connection; PostgreSQL ends the transaction and frees the lock.

    The killed run's row goes with its transaction and the run again writes one: one row. Work
    committed outside the lock's transaction would survive the kill: two."""
    wp = shared_prefork_worker
    killed = rebuild_with_advisory_lock.apply_async((job,), queue=wp.queue)
    pid = task_pid(killed)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)

    assert killed.get(timeout=60) == "done"  # the retried run got the lock at once and ran
    assert f"[{killed.id}] retry: Retry in 2s: WorkerLostError" in wp.log()
    assert runs(job) == 1  # the killed run's row rolled back with its transaction


@pytest.mark.services("redis")
@pytest.mark.antipattern("snippets/task_design/locking.py:antipattern")
def test_why_a_release_without_a_token_frees_the_next_holders_lock(client, job):
    """A outlives its TTL, B takes the lock, A's release deletes B's lock, C gets in."""
    for lock, c_gets_in in ((naive_redis_lock, True), (redis_lock, False)):
        name = f"lock:{job}:{lock.__name__}"
        a = lock(client, name, 1)
        assert a.__enter__()
        wait_until(lambda n=name: not client.exists(n), timeout=10, what="A's lock expiry")
        b = lock(client, name, 30)
        assert b.__enter__()  # A is still running; B starts
        a.__exit__(None, None, None)  # A finishes and releases
        c = lock(client, name, 30)
        assert c.__enter__() is c_gets_in, lock.__name__  # naive: C runs beside B
        c.__exit__(None, None, None)
        b.__exit__(None, None, None)
        client.delete(name)


@pytest.mark.services("postgres")
def test_advisory_lock_is_exclusive_between_sessions(job):
    """Two connections: the second cannot take the lock while the first holds it."""
    from django.db import connections

    with advisory_lock(job) as held:
        assert held
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id(job)])
                assert cursor.fetchone() == (False,)
        finally:
            other.close()


@pytest.mark.services("postgres")
def test_every_job_name_gives_a_key_postgresql_accepts():
    """(1) on the advisory lock: the digest read as a signed 64-bit integer, PostgreSQL's
    bigint. Read unsigned, half of all names give a key above its range, and the lock fails."""
    names = [f"job:td-lock-id-{n}" for n in range(16)]  # fixed: the same keys on every run
    keys = [lock_id(name) for name in names]
    assert min(keys) < 0 < max(keys)  # both halves of the range, so the top half is covered
    assert all(-(2**63) <= key < 2**63 for key in keys)
    for name in names:
        with advisory_lock(name) as held:
            assert held, name
