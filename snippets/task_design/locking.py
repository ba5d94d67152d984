"""Locking: one run of a job at a time, and a lock that a crash cannot leave behind."""

# --8<-- [start:redis_lock]
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

# Delete the key only if it still holds our token: never another holder's lock.
RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


@contextmanager
def redis_lock(client: redis.Redis, name: str, ttl_s: int) -> Iterator[bool]:
    """Yield True if this caller holds `name` (for at most ttl_s seconds), else False."""
    token = uuid.uuid4().hex  # (1)!
    acquired = bool(client.set(name, token, nx=True, ex=ttl_s))  # (2)!
    try:
        yield acquired
    finally:
        if acquired:
            client.eval(RELEASE, 1, name, token)  # (3)!


# --8<-- [end:redis_lock]


# --8<-- [start:work]
import time

from snippets.task_design.models import JobRun

WORK_SECONDS = 3  # how long the stand-in takes: long enough for a second run to overlap


def rebuild_index(job: str) -> None:
    """The work itself. A stand-in for yours: it records the run, then takes its time."""
    JobRun.objects.create(job=job)
    time.sleep(WORK_SECONDS)


# --8<-- [end:work]


# --8<-- [start:redis_task]
import logging
import os
from functools import cache

import redis
from celery import shared_task

logger = logging.getLogger(__name__)
TIME_LIMIT = 60  # (1)!
LOCK_TTL = TIME_LIMIT + 30


@cache
def lock_client() -> redis.Redis:
    """The Redis that holds the locks: one client (and connection pool) per process."""
    return redis.Redis.from_url(os.environ.get("SNIPPETS_REDIS_URL", "redis://127.0.0.1:6379/15"))


@shared_task(
    soft_time_limit=TIME_LIMIT - 10,
    time_limit=TIME_LIMIT,
    default_retry_delay=2,  # a run lost with its worker is retried after 2 s (not 180)
)
def rebuild_search_index(job: str) -> str:
    """Rebuild an index; if another run holds the lock, skip: that run does the work."""
    with redis_lock(lock_client(), f"lock:{job}", LOCK_TTL) as acquired:
        if not acquired:
            logger.info("%s: another run holds lock:%s, skipping", job, job)  # (2)!
            return "skipped"
        rebuild_index(job)  # (3)!
        return "done"


# --8<-- [end:redis_task]


# --8<-- [start:advisory_lock]
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
from django.db import connection, transaction

logger = logging.getLogger(__name__)


def lock_id(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory locks (Python's hash() varies by process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


@contextmanager
def advisory_lock(name: str) -> Iterator[bool]:
    """Yield True if this transaction holds the PostgreSQL advisory lock `name`."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id(name)])  # (1)!
        (acquired,) = cursor.fetchone()
        yield acquired  # (2)!


@shared_task(soft_time_limit=50, time_limit=60, default_retry_delay=2)
def rebuild_with_advisory_lock(job: str) -> str:
    """The same job, locked by PostgreSQL: no expiry to choose, nothing to clean up."""
    with advisory_lock(f"job:{job}") as acquired:
        if not acquired:
            logger.info("%s: another run holds the advisory lock, skipping", job)
            return "skipped"
        rebuild_index(job)  # the same work, inside the lock's transaction
        return "done"


# --8<-- [end:advisory_lock]


# --8<-- [start:antipattern]
from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def naive_redis_lock(client: redis.Redis, name: str, ttl_s: int) -> Iterator[bool]:
    """ANTI-PATTERN: releases with a plain DEL, whoever holds the lock by then."""
    acquired = bool(client.set(name, "locked", nx=True, ex=ttl_s))
    try:
        yield acquired
    finally:
        if acquired:
            client.delete(name)  # after an expiry, this deletes the NEXT holder's lock


# --8<-- [end:antipattern]
