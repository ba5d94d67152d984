"""Proof for docs/configuration/brokers.md: startup retry, Redis redelivery after the visibility
timeout, RabbitMQ quorum queues — on real worker subprocesses and real brokers."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from celery import Celery
from celery.result import AsyncResult
from django.utils import timezone
from kombu import Connection

from snippets.configuration.worker_settings import record_run
from tests.configuration.helpers import PrivateRedis, runs_of, settings_env
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # worker_process needs a network broker


def publisher_app(module: str, broker: str, **overrides: object) -> Celery:
    """An app configured from settings `module` (+ overrides) on `broker`, as a web process is.

    (Celery reads the CELERY_BROKER_URL environment variable before any setting, so a
    publisher on another broker than this process's sets broker_read/write_url, which win.)
    """
    app = Celery("snippets", set_as_current=False)
    app.config_from_object(module, namespace="CELERY")
    app.conf.update({k.removeprefix("CELERY_").lower(): v for k, v in overrides.items()})
    app.conf.broker_read_url = app.conf.broker_write_url = broker
    return app


def send(
    module: str,
    broker: str,
    queue: str,
    *args: object,
    countdown: float | None = None,
    **overrides: object,
) -> AsyncResult:
    """Publish record_run to `queue` on `broker`, as an app configured from `module` would."""
    app = publisher_app(module, broker, **overrides)
    return app.send_task(record_run.name, args, queue=queue, countdown=countdown)


def on_broker(url: str, base: str, **overrides: object) -> dict[str, str]:
    """Worker environment: settings module `base` (+ overrides), broker `url`."""
    return {**settings_env(base=base, **overrides), "CELERY_BROKER_URL": url}


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers)",
    reason="the page's broker settings, on a private Redis that starts after the worker",
)
def test_a_worker_started_before_its_broker_connects_once_it_is_up(worker_process, private_redis):
    """a private `redis-server` on a free port, started after the worker; the worker connects and
    runs a task."""
    url = private_redis.url
    wp = worker_process(env=on_broker(url, "snippets.configuration.brokers"), ready=False)
    log = wp.wait_for_log("Trying again in")  # no broker yet: the worker waits and retries
    assert f"127.0.0.1:{private_redis.port}/0: Error 111" in log
    assert wp.proc.poll() is None
    private_redis.start()
    log = wp.wait_for_log("Connected to redis://", timeout=60)
    assert f"Connected to redis://:**@127.0.0.1:{private_redis.port}/0" in log
    result = send("snippets.configuration.brokers", url, wp.queue, "broker came up", 0.0)
    assert result.get(timeout=60) > 0
    wp.stop()  # before the broker goes away


@pytest.mark.antipattern("snippets/project/settings.py:celery_settings")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers, no retry on startup)",
    reason="the anti-pattern under test",
)
def test_why_without_retry_on_startup_the_worker_exits(worker_process, private_redis):
    """the worker exits non-zero."""
    url = private_redis.url
    env = on_broker(
        url, "snippets.configuration.brokers", CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP=False
    )
    wp = worker_process(env=env, ready=False)
    assert wp.proc.wait(60) != 0  # gone: a broker that comes up a second later finds no worker
    assert "broker_connection_retry_on_startup=False). Shutting down" in wp.log()


SHORT_VISIBILITY = {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}


def redis_worker(worker_process, redis_url: str, visibility: int):
    """A 2-process worker on Redis whose unacked messages come back after `visibility` s."""
    env = on_broker(
        redis_url,
        "snippets.configuration.brokers",
        CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": visibility, **SHORT_VISIBILITY},
    )
    wp = worker_process(concurrency=2, env=env, ready=False)
    wp.wait_for_log(" ready.", timeout=60)
    return wp


@pytest.mark.services("redis")
@pytest.mark.antipattern("snippets/configuration/brokers.py:redis")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(brokers, visibility_timeout=2)",
    reason="the anti-pattern under test: a visibility timeout shorter than the task",
)
def test_why_a_task_longer_than_the_visibility_timeout_runs_twice(worker_process, redis_url):
    """Visibility timeout 2 s, task 6 s: Redis hands the unacked message out again mid-run."""
    wp = redis_worker(worker_process, redis_url, visibility=2)
    result = send("snippets.configuration.brokers", redis_url, wp.queue, "vt-short", 6.0)
    first, second = wait_until(
        lambda: runs_of(result.id)[:2] if len(runs_of(result.id)) > 1 else None,
        timeout=60,
        what="a second delivery of the same message",
    )
    assert first.finished_at is None or second.started_at < first.finished_at


@pytest.mark.services("redis")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(brokers, visibility_timeout=30)",
    reason="the page's rule, sized for a short task",
)
def test_a_visibility_timeout_above_the_runtime_delivers_once(worker_process, redis_url):
    """Redis: one run."""
    wp = redis_worker(worker_process, redis_url, visibility=30)
    result = send("snippets.configuration.brokers", redis_url, wp.queue, "vt-long", 4.0)
    wait_until(
        lambda: all(r.finished_at for r in runs_of(result.id)) and runs_of(result.id),
        timeout=60,
        what="the task to finish",
    )
    wp.stop()  # with sweeps every second, a redelivery would have happened by now
    assert len(runs_of(result.id)) == 1


def quorum_worker(worker_process, amqp_url: str, queue: str | None = None, **overrides):
    env = on_broker(amqp_url, "snippets.configuration.brokers_rabbitmq", **overrides)
    wp = worker_process(env=env, ready=False, **({"queue": queue} if queue else {}))
    wp.wait_for_log(" ready.", timeout=60)
    return wp


def queue_types(amqp_url: str) -> dict[str, str]:
    """Ask RabbitMQ itself: name -> type of every queue in the vhost."""
    vhost = urlparse(amqp_url).path[1:] or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "type"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)


DELAYED_LEVELS = range(28)  # Celery's native delayed delivery: one quorum queue per bit


@pytest.fixture
def delete_amqp_queues(amqp_url) -> Iterator[list[str]]:
    """Queues to delete after the test, with the delayed-delivery topology a quorum worker
    declares, so the shared vhost is left as it was found."""
    names: list[str] = []
    yield names
    delayed = [f"celery_delayed_{level}" for level in DELAYED_LEVELS]
    with Connection(amqp_url) as conn:
        for name in [*names, *delayed]:
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.queue_delete(name)
        for name in [*names, *delayed, "celery_delayed_delivery"]:  # (a queue's own exchange)
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.exchange_delete(name)


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers_rabbitmq)",
    reason="the page's quorum-queue settings",
)
def test_the_queue_a_worker_declares_is_quorum_and_runs_tasks(
    worker_process, amqp_url, delete_amqp_queues
):
    """RabbitMQ, asked with `rabbitmqctl list_queues name type`: the worker's queue and the 28
    `celery_delayed_*` queues of native delayed delivery are `quorum`; a task published with
    confirms runs."""
    wp = quorum_worker(worker_process, amqp_url)
    delete_amqp_queues.append(wp.queue)
    types = queue_types(amqp_url)
    assert types[wp.queue] == "quorum"
    # Celery 5.5+ native delayed delivery: countdowns wait in 28 quorum queues on the broker
    delayed = {f"celery_delayed_{level}" for level in DELAYED_LEVELS}
    assert {types.get(name) for name in delayed} == {"quorum"}
    result = send("snippets.configuration.brokers_rabbitmq", amqp_url, wp.queue, "quorum", 0.0)
    assert result.get(timeout=60) > 0
    wp.stop()  # before the queues are deleted


def depth(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue`, as RabbitMQ counts them."""
    with Connection(amqp_url) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def held_by_worker(app: Celery, hostname: str) -> set[str]:
    """Ids of the tasks the worker holds in memory: reserved, or scheduled for their ETA."""
    inspect = app.control.inspect(destination=[hostname], timeout=5)
    held = [
        *(inspect.scheduled() or {}).get(hostname, []),
        *(inspect.reserved() or {}).get(hostname, []),
    ]
    return {entry.get("request", entry)["id"] for entry in held}


COUNTDOWN = 10  # 0b1010: 8 s in celery_delayed_3, then 2 s in celery_delayed_1


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers_rabbitmq)",
    reason="the page's quorum-queue settings, whose countdown behaviour is under test",
)
def test_a_countdown_on_quorum_queues_waits_in_the_broker_not_in_the_worker(
    worker_process, amqp_url, delete_amqp_queues
):
    """The page's settings: the countdown travels through native delayed delivery."""
    module = "snippets.configuration.brokers_rabbitmq"
    wp = quorum_worker(worker_process, amqp_url)
    delete_amqp_queues.append(wp.queue)
    sent_at = timezone.now()
    result = send(module, amqp_url, wp.queue, "countdown", 0.0, countdown=COUNTDOWN)
    wait_until(
        lambda: depth(amqp_url, "celery_delayed_3") == 1,
        timeout=COUNTDOWN / 2,
        what="the message in the broker's 8-second delay queue",
    )
    assert result.id not in held_by_worker(publisher_app(module, amqp_url), wp.hostname)
    assert result.id not in wp.log()  # not even received: the worker holds nothing
    assert result.get(timeout=60) > 0
    [run] = runs_of(result.id)
    assert run.started_at >= sent_at + timedelta(seconds=COUNTDOWN)  # and not early
    assert "Direct exchanges are not supported" not in wp.log()
    wp.stop()  # before the queues are deleted


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers_rabbitmq, "
    "task_default_queue named for the test)",
    reason="the page's settings; the default queue gets a name of its own, so the vhost's "
    "`celery` queue (declared by other proofs, maybe as classic) is left alone",
)
def test_the_default_queue_is_quorum_and_its_countdowns_wait_in_the_broker(
    worker_process, amqp_url, delete_amqp_queues
):
    """Notes 1 and 3 on the default queue itself (the other proofs use queues created on the
    fly): RabbitMQ reports it `quorum`, and a countdown published without a queue, as most
    calls are, waits in the broker's delay queues, not in the worker."""
    module = "snippets.configuration.brokers_rabbitmq"
    name = f"default-{uuid.uuid4().hex[:8]}"
    own = {"CELERY_TASK_DEFAULT_QUEUE": name}
    delete_amqp_queues.append(name)  # first: a worker that fails to start leaves it too
    wp = quorum_worker(worker_process, amqp_url, queue=name, **own)
    try:
        assert queue_types(amqp_url)[name] == "quorum"
        app = publisher_app(module, amqp_url, **own)
        result = app.send_task(record_run.name, ("default queue", 0.0), countdown=COUNTDOWN)
        wait_until(
            lambda: depth(amqp_url, "celery_delayed_3") == 1,
            timeout=COUNTDOWN / 2,
            what="the message in the broker's 8-second delay queue",
        )
        assert result.id not in held_by_worker(app, wp.hostname)
        assert result.get(timeout=60) > 0
    finally:
        wp.stop()  # before the queues are deleted, failed or not (it would declare them again)


@contextlib.contextmanager
def refusing_queue(amqp_url: str, name: str) -> Iterator[None]:
    """A RabbitMQ policy on queue `name`: at most one message, further publishes refused
    (max-length 1, overflow reject-publish): the broker says no to a publish, as it does when
    a disk or memory alarm or a full queue stops it taking messages."""
    vhost = urlparse(amqp_url).path[1:] or "/"
    policy = f"refuse-{name}"
    definition = '{"max-length": 1, "overflow": "reject-publish"}'
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run(
        [*ctl, "set_policy", "-p", vhost, "--apply-to", "queues", policy, f"^{name}$", definition],
        check=True,
        timeout=60,
    )
    try:
        yield
    finally:
        subprocess.run([*ctl, "clear_policy", "-p", vhost, policy], check=True, timeout=60)


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "a RabbitMQ policy (max-length 1, reject-publish) on the test's queue",
    reason="a broker that refuses a message, on demand",
)
def test_with_publisher_confirms_a_refused_publish_raises_instead_of_vanishing(
    amqp_url, delete_amqp_queues
):
    """Note 4: with the page's confirm_publish, a send returns only once RabbitMQ took the
    message: every send that returned is in the queue, and each one RabbitMQ refused raised in
    the caller (kombu's OperationalError from py-amqp's MessageNacked, once Celery's publish
    retries are spent). Without confirms, every send returns and the refused ones are gone."""
    from amqp.exceptions import MessageNacked
    from kombu.exceptions import OperationalError

    module = "snippets.configuration.brokers_rabbitmq"
    name = f"confirm-{uuid.uuid4().hex[:8]}"
    delete_amqp_queues.append(name)
    returned, refused = 0, []
    with refusing_queue(amqp_url, name):
        for n in range(4):
            try:
                send(module, amqp_url, name, f"confirm {n}", 0.0)
            except OperationalError as exc:
                refused.append(exc.__cause__)
            else:
                returned += 1
        assert refused
        assert all(isinstance(cause, MessageNacked) for cause in refused), refused
        assert depth(amqp_url, name) == returned  # no send returned for a message not taken


@pytest.mark.services("redis")
def test_the_redis_options_are_kombus_own_and_outlast_the_hard_limit(redis_url):
    """Notes 1 and 2 on the block's options as kombu's Redis channel reads them: each key is
    an option the channel takes (a misspelt one is ignored without a word), each value is
    kombu's own default (the block names the knobs, it does not change them), and the
    visibility timeout outlasts the hard time limit of the settings it is layered on."""
    from kombu.transport.redis import Channel as RedisChannel

    from snippets.configuration import brokers

    options = brokers.CELERY_BROKER_TRANSPORT_OPTIONS
    assert set(options) <= set(RedisChannel.from_transport_options)
    with Connection(redis_url, transport_options=options) as conn:
        channel = conn.default_channel
        for key, value in options.items():
            assert getattr(channel, key) == value == getattr(RedisChannel, key), key
        assert channel.visibility_timeout > brokers.CELERY_TASK_TIME_LIMIT


def test_the_redis_block_itself_keeps_retrying_at_startup(monkeypatch):
    """Note 3: the block says it itself, as a reader pastes it, rather than leaning on the
    settings below it: Celery 6.0 reads only this setting to retry at startup."""
    from docs.hooks.includes import expand

    namespace: dict[str, object] = {}
    exec(expand('--8<-- "snippets/configuration/brokers.py:redis"'), namespace)
    assert namespace["CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP"] is True


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers_rabbitmq, direct)",
    reason="the anti-pattern under test: the same settings on Celery's default direct exchange",
)
def test_why_on_a_direct_exchange_the_countdown_waits_in_the_worker(
    worker_process, amqp_url, delete_amqp_queues, caplog
):
    """Celery's default exchange type, direct: native delayed delivery is skipped (a warning),
    the message goes straight to the worker, which holds it in memory until its ETA."""
    module = "snippets.configuration.brokers_rabbitmq"
    direct = {
        "CELERY_TASK_DEFAULT_EXCHANGE_TYPE": "direct",
        "CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE": None,
    }
    wp = quorum_worker(worker_process, amqp_url, **direct)
    delete_amqp_queues.append(wp.queue)
    # Celery logs the warning on `celery.app.base`, a child of the `celery` logger, whose level
    # and propagation depend on what set up logging earlier in this process (flaky through the
    # root handler): the test's handler listens on that logger itself, at WARNING.
    base = logging.getLogger("celery.app.base")
    with caplog.at_level(logging.WARNING, logger=base.name):
        base.addHandler(caplog.handler)
        try:
            result = send(module, amqp_url, wp.queue, "countdown", 0.0, countdown=60, **direct)
        finally:
            base.removeHandler(caplog.handler)
    assert "Direct exchanges are not supported with native delayed delivery" in caplog.text
    app = publisher_app(module, amqp_url, **direct)
    wait_until(
        lambda: result.id in held_by_worker(app, wp.hostname),
        what="the countdown task held by the worker",
    )
    assert {depth(amqp_url, f"celery_delayed_{level}") for level in DELAYED_LEVELS} == {0}
    app.control.revoke(result.id)
    wp.stop()  # before the queues are deleted


@pytest.mark.services("rabbitmq")
@pytest.mark.antipattern("snippets/configuration/brokers_rabbitmq.py:rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.configuration.brokers_rabbitmq, classic)",
    reason="the anti-pattern under test",
)
def test_why_default_queue_type_alone_leaves_worker_queues_classic(
    worker_process, amqp_url, delete_amqp_queues
):
    """Only the default queue follows task_default_queue_type; a queue from -Q or a route is
    created with task_create_missing_queue_type, which defaults to classic."""
    wp = quorum_worker(worker_process, amqp_url, CELERY_TASK_CREATE_MISSING_QUEUE_TYPE="classic")
    delete_amqp_queues.append(wp.queue)
    assert queue_types(amqp_url)[wp.queue] == "classic"
    wp.stop()  # before the queues are deleted


def test_the_defaults_the_page_quotes():
    """kombu 5.7 / Celery 5.7 defaults the page relies on."""
    from celery.app.defaults import DEFAULTS
    from kombu.transport import TRANSPORT_ALIASES
    from kombu.transport.pgmq import Channel as PgmqChannel
    from kombu.transport.redis import Channel as RedisChannel

    assert RedisChannel.visibility_timeout == 3600
    assert RedisChannel.unacked_restore_interval == 10  # seconds between sweeps...
    assert RedisChannel.unacked_restore_throttle == 10  # ...and only every 10th one scans
    assert DEFAULTS["task_default_queue_type"] == "classic"
    assert DEFAULTS["task_create_missing_queue_type"] == "classic"
    assert DEFAULTS["worker_detect_quorum_queues"] is True
    assert DEFAULTS["broker_native_delayed_delivery_queue_type"] == "quorum"
    assert "pgmq" in TRANSPORT_ALIASES
    assert PgmqChannel.default_visibility_timeout == 1800


def test_the_environment_variable_beats_the_setting(monkeypatch):
    """Celery reads CELERY_BROKER_URL / CELERY_RESULT_BACKEND from the environment first."""
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://from-the-environment:6379/0")
    app = Celery(set_as_current=False)
    app.conf.broker_url = "amqp://from-the-settings//"
    assert app.conf.broker_url == "redis://from-the-environment:6379/0"


@pytest.mark.services("rabbitmq")
def test_a_queue_type_cannot_change_in_place(amqp_url, delete_amqp_queues):
    """RabbitMQ refuses to redeclare an existing classic queue as quorum: the type is fixed when the
    queue is created."""
    from amqp.exceptions import PreconditionFailed
    from kombu import Queue

    name = "configuration-type-change"
    delete_amqp_queues.append(name)
    with Connection(amqp_url) as conn:
        Queue(name, channel=conn.channel()).declare()  # classic
        with pytest.raises(PreconditionFailed, match="x-queue-type"):
            Queue(
                name, queue_arguments={"x-queue-type": "quorum"}, channel=conn.channel()
            ).declare()


@pytest.mark.parametrize(
    "section",
    [
        "snippets/configuration/brokers.py:redis",
        "snippets/configuration/brokers_rabbitmq.py:rabbitmq",
    ],
)
def test_the_copied_block_has_no_broker_url_to_fall_back_on(section, monkeypatch):
    """The block as a reader pastes it, run without CELERY_BROKER_URL, sets no URL of its own,
    so the project settings' "not set in the environment" error stands (the audit's
    fallback-url). The old line, os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:…"),
    set one."""
    from docs.hooks.includes import expand

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    namespace: dict[str, object] = {}
    exec(expand(f'--8<-- "{section}"'), namespace)  # the page's own block
    assert "CELERY_BROKER_TRANSPORT_OPTIONS" in namespace  # the block ran
    assert "CELERY_BROKER_URL" not in namespace
