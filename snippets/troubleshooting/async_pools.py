"""The gevent pool and the Django ORM: every greenlet runs in the worker's one OS thread, so an
asyncio event loop one task runs is "running" for every other task's ORM call, and every
greenlet that queries holds a database connection of its own."""

# --8<-- [start:antipattern]
import asyncio
import os

from celery import shared_task

# How long the stand-in call waits: 0.1 s here; the proof that needs a task still waiting
# while others run sets it on its worker (a deviation it declares).
FETCH_RATES_SECONDS = float(os.environ.get("SNIPPETS_FETCH_RATES_SECONDS", "0.1"))


async def fetch_rates() -> dict[str, float]:
    """An async client's call (httpx.AsyncClient, aiohttp). A stand-in: a wait, then fixed
    rates."""
    await asyncio.sleep(FETCH_RATES_SECONDS)
    return {"EUR": 1.0, "USD": 1.08}


@shared_task
def refresh_rates_in_loop() -> dict[str, float]:
    """ANTI-PATTERN on gevent: the loop runs in the thread every other task's greenlet uses."""
    return asyncio.run(fetch_rates())  # (1)!


# --8<-- [end:antipattern]

# --8<-- [start:pattern]
import asyncio  # noqa: F811
from collections.abc import Coroutine
from typing import TypeVar

from celery import shared_task
from gevent import get_hub

T = TypeVar("T")


def run_coroutine(coroutine: Coroutine[object, object, T]) -> T:
    """asyncio.run() in a native thread of gevent's thread pool: the loop runs there, and
    this greenlet waits without blocking the others."""
    return get_hub().threadpool.spawn(asyncio.run, coroutine).get()  # (1)!


@shared_task
def refresh_rates() -> dict[str, float]:
    """The same call (`fetch_rates`, above), safe beside ORM tasks on a gevent worker."""
    return run_coroutine(fetch_rates())


# --8<-- [end:pattern]


# --8<-- [start:pool]
def for_gevent_workers(database: dict, max_size: int) -> dict:
    """A DATABASES entry for gevent workers: one pool per worker process, shared by all its
    greenlets, of at most `max_size` connections (Django 5.1+, psycopg 3, psycopg-pool)."""
    pool = {"min_size": 1, "max_size": max_size, "timeout": 30}  # (1)!
    return {**database, "CONN_MAX_AGE": 0, "OPTIONS": {**database.get("OPTIONS", {}), "pool": pool}}


# --8<-- [end:pool]
