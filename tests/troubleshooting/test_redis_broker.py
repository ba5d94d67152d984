"""Proof for docs/troubleshooting/redis-broker.md: private `redis-server` processes of the test's
own (never the shared Redis), configured as each entry describes, a publisher configured as the
project's web process is, and the page's configuration check.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError

from snippets.troubleshooting.redis_broker import (
    CELERY_BROKER_URL,
    CELERY_RESULT_BACKEND,
    redis_broker_problems,
)
from snippets.troubleshooting.unregistered_tasks import build_report
from tests.configuration.helpers import PrivateRedis
from tests.harness.process import ROOT
from tests.harness.services import require_tool
from tests.harness.wait import wait_until

CONF = ROOT / "snippets/troubleshooting/redis_broker.conf"
OOM = "command not allowed when used memory > 'maxmemory'"
MAXCLIENTS = "max number of clients reached"
QUEUE = "celery"  # a private server: the default queue's name collides with nothing
SMALL = ("--maxmemory", "2mb")  # the test's memory limit, instead of production's gigabytes
TASKS = 20


@pytest.fixture
def redis_server(tmp_path, caplog) -> Iterator[Callable[..., redis.Redis]]:
    """Factory: start a private redis-server with `args` (no persistence); its client."""
    require_tool("redis-server", ["redis-server", "--version"])
    servers: list[PrivateRedis] = []

    def start(*args: str) -> redis.Redis:
        server = PrivateRedis(tmp_path, (*args, *PrivateRedis.NO_PERSISTENCE))
        servers.append(server)
        server.start()
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        wait_until(
            client.ping, 30, what="the private redis-server answers", ignore=(redis.RedisError,)
        )
        return client

    yield start
    for server in servers:
        server.stop()  # collects the garbage first (PrivateRedis.stop says why)
    # The check that it did: a result the proof left pending, collected now that the servers
    # are gone, would make this collection retry them ("Connection to Redis lost: Retry (n/20)",
    # 20 s of it after the flush proof, without the collection in PrivateRedis.stop).
    before = len(caplog.records)
    gc.collect()
    retried = [r.getMessage() for r in caplog.records[before:] if r.name == "celery.backends.redis"]
    assert not retried, "garbage still bound to a stopped private server"


def url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def publisher(client: redis.Redis) -> Celery:
    """An app configured as the project's web process, publishing to this server."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("snippets.project.settings", namespace="CELERY")
    app.conf.broker_read_url = app.conf.broker_write_url = url_of(client)
    return app


def publish(app: Celery, count: int) -> None:
    with app.connection_for_write() as conn:
        for i in range(count):
            app.send_task(build_report.name, (i,), queue=QUEUE, connection=conn)


def fill(client: redis.Redis, keys: int = 4000, first: int = 0) -> None:
    """What else shares the server: cache entries, results, sessions (1 kB each)."""
    with client.pipeline(transaction=False) as pipe:
        for i in range(first, first + keys):
            pipe.set(f"cache:{i}", "x" * 1024)
        pipe.execute(raise_on_error=False)


@pytest.mark.antipattern("snippets/troubleshooting/redis_broker.conf:memory")
def test_an_evicting_redis_deletes_queued_tasks_without_an_error(redis_server):
    """`maxmemory-policy allkeys-lru` (a cache's policy): queued tasks, then cache writes past
    `maxmemory`: no error anywhere, and the queue is evicted; the page's check names the policy
    and the evictions."""
    client = redis_server(*SMALL, "--maxmemory-policy", "allkeys-lru")
    publish(publisher(client), TASKS)
    assert client.llen(QUEUE) == TASKS
    # The writes succeed: Redis makes room by deleting keys. allkeys-lru evicts the least
    # recently used of a few sampled keys, so the queue (untouched since the publish) goes once
    # a sample finds it: one round of writes missed it in a CI rehearsal.
    for round_ in range(10):
        fill(client, first=round_ * 4000)
        if client.llen(QUEUE) < TASKS:
            break
    assert client.llen(QUEUE) < TASKS  # tasks gone; nothing was raised or logged
    assert client.info("stats")["evicted_keys"] > 0
    problems = redis_broker_problems(url_of(client))
    assert "maxmemory-policy is allkeys-lru: queued tasks can be evicted" in problems
    assert any("keys evicted since the server started" in p for p in problems)


def test_a_noeviction_redis_refuses_writes_and_keeps_every_queued_task(redis_server):
    """the page's redis.conf (`noeviction`), memory cut to 2 MB for the test: the queue is kept
    whole; the writes that do not fit fail loudly, and a publish raises `OperationalError` …
    "command not allowed when used memory > 'maxmemory'"."""
    client = redis_server(str(CONF), *SMALL)
    app = publisher(client)
    publish(app, TASKS)
    with pytest.raises(redis.exceptions.OutOfMemoryError, match=OOM):
        for _ in range(10):  # until a write does not fit
            fill(client)
            client.set("probe", "x" * 1024)
    assert client.llen(QUEUE) == TASKS  # nothing was deleted to make room
    with pytest.raises(OperationalError, match=OOM):
        publish(app, 1)
    assert client.info("stats")["evicted_keys"] == 0
    problems = redis_broker_problems(url_of(client))
    assert problems == ["used memory above 80% of maxmemory: publishes will soon fail (OOM)"]


def test_the_page_s_redis_conf_passes_the_check(redis_server):
    """the page's redis.conf as written (1 GB, `noeviction`, 10000 clients) and a few queued
    tasks: the check reports nothing, as it must not alarm on a healthy broker."""
    client = redis_server(str(CONF))
    publish(publisher(client), TASKS)
    assert client.config_get("maxmemory")["maxmemory"] == str(1024**3)
    assert redis_broker_problems(url_of(client)) == []


def test_a_full_client_table_refuses_a_publish_until_maxclients_is_raised(redis_server):
    """`maxclients` reached (here 3, by the test's own connections): a publish raises
    `OperationalError: max number of clients reached`; the page's check, given a slot, reports
    the table nearly full; with `maxclients` raised at run time the same publish goes through."""
    client = redis_server("--maxclients", "3")
    held = [redis.Redis.from_url(url_of(client)) for _ in range(2)]
    for connection in (client, *held):
        connection.ping()  # three connections: the table is full
    app = publisher(client)
    with pytest.raises(OperationalError, match=MAXCLIENTS):
        publish(app, 1)
    held.pop().close()  # one slot, for the check's own connection, once the server has seen it
    wait_until(
        lambda: client.info("clients")["connected_clients"] < 3, what="the closed client gone"
    )
    assert redis_broker_problems(url_of(client)) == ["connected clients above 80% of maxclients"]
    client.config_set("maxclients", 10000)  # the page's redis.conf value
    publish(app, 1)
    assert client.llen(QUEUE) == 1


def results_app(client: redis.Redis, **conf: object) -> Celery:
    """An app configured as the project's, storing results on this server."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("snippets.project.settings", namespace="CELERY")
    app.conf.update(result_backend=url_of(client), **conf)
    port = app.backend.client.connection_pool.connection_kwargs["port"]
    assert port == client.connection_pool.connection_kwargs["port"]
    return app


def test_results_without_expiry_stay_in_redis_for_ever(redis_server, monkeypatch):
    """a result stored with `result_expires = None`: its key `celery-task-meta-<id>` has no TTL
    and stays until deleted by hand; stored with the project's setting, Redis expires it."""
    monkeypatch.delenv("CELERY_RESULT_BACKEND")  # read before any setting: the run's backend
    client = redis_server()
    results_app(client, result_expires=None).backend.store_result("kept", 1, "SUCCESS")
    app = results_app(client)
    app.backend.store_result("expiring", 1, "SUCCESS")
    assert client.ttl("celery-task-meta-kept") == -1  # -1: no expiry
    ttl = client.ttl("celery-task-meta-expiring")
    assert 0 < ttl <= app.conf.result_expires.total_seconds()


def on_database(client: redis.Redis, url: str) -> str:
    """`url`'s database number, on this private server."""
    return url_of(client).rsplit("/", 1)[0] + urlsplit(url).path


@pytest.mark.deviation(
    "CELERY_BROKER_URL=a private redis-server",
    reason="a server of the test's own, flushed by the test",
)
@pytest.mark.deviation("CELERY_RESULT_BACKEND=the same private server", reason="the entry")
@pytest.mark.antipattern("snippets/troubleshooting/redis_broker.py:databases")
@pytest.mark.parametrize("shared", [True, False], ids=["one-database", "the-page-s-databases"])
def test_flushing_the_results_database_deletes_queued_tasks_when_it_is_the_brokers(
    redis_server, worker_process, shared, monkeypatch
):
    """results in the broker's database: one listing holds results and queues alike, and
    `FLUSHDB` to clear the results deletes three queued tasks without a word: the worker that
    starts next never runs them. With the page's two databases the same flush leaves them
    queued, and they run."""
    client = redis_server()
    broker = on_database(client, CELERY_BROKER_URL)
    backend = broker if shared else on_database(client, CELERY_RESULT_BACKEND)
    env = {"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": backend}
    for variable in env:  # read before any setting: the run's services
        monkeypatch.delenv(variable)
    # The celery command's --result-backend reads RESULT_BACKEND and copies it over
    # CELERY_RESULT_BACKEND (celery/bin/celery.py:73, :129): a run that exports it would send
    # the worker's results elsewhere.
    monkeypatch.delenv("RESULT_BACKEND", raising=False)
    app = publisher(client)  # a web process, publishing and reading results here
    app.conf.update(broker_read_url=broker, broker_write_url=broker, result_backend=backend)
    app.backend.store_result("earlier", "report 0 built", "SUCCESS")  # a finished task's

    queue = f"q-flush-{uuid.uuid4().hex[:8]}"  # no worker consumes it yet (a deploy, a backlog)
    queued = [app.send_task(build_report.name, (n,), queue=queue) for n in (1, 2, 3)]
    results = redis.Redis.from_url(backend)
    listed = {key.decode() for key in results.keys("*")}
    assert ("celery-task-meta-earlier" in listed, queue in listed) == (True, shared)
    results.flushdb()  # "clear the results"

    wp = worker_process(env=env, queue=queue, ready=False)
    wp.wait_for_log(" ready.")
    if shared:
        assert client.llen(queue) == 0  # the three tasks went with the results
        with pytest.raises(CeleryTimeoutError):
            queued[0].get(timeout=5)
    else:
        assert [r.get(timeout=60) for r in queued] == [f"report {n} built" for n in (1, 2, 3)]
