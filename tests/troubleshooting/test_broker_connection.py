"""Proof for docs/troubleshooting/broker-connection.md: real worker subprocesses whose broker is
down at start, comes up, or drops every connection (a port in front of the run's Redis or
RabbitMQ), and publishers facing a broker that refuses or never answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from celery import Celery
from django.conf import settings
from kombu.exceptions import OperationalError

from snippets.troubleshooting.unregistered_tasks import build_report
from tests.configuration.helpers import settings_env
from tests.harness.wait import wait_until
from tests.troubleshooting.helpers import BrokerPort

pytestmark = pytest.mark.django_db(transaction=True)

SETTINGS = "snippets.troubleshooting.broker_connection"
CANNOT_CONNECT = "consumer: Cannot connect to"
TRYING_AGAIN = "Trying again in"
REFUSED = "Connection refused"
DEPRECATION = "The broker_connection_retry configuration setting will no longer determine"
LOST = "consumer: Connection to broker lost. Trying to re-establish the connection..."
TIMEOUT = "Timeout reading from socket"


@pytest.fixture
def broker_port() -> Iterator[BrokerPort]:
    port = BrokerPort(settings.CELERY_BROKER_URL)
    yield port
    port.close()


def through(port: BrokerPort, base: str = SETTINGS, **overrides: object) -> dict[str, str]:
    """Worker environment: settings `base` (+ overrides), the broker reached through `port`."""
    return {**settings_env(base=base, **overrides), "CELERY_BROKER_URL": port.url}


def connections(log: str) -> int:
    return log.count("Connected to ")


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.troubleshooting.broker_connection), "
    "CELERY_BROKER_URL=a port of the test's in front of the broker",
    reason="the page's settings; the broker is down at start, comes up, then drops every "
    "connection at once, as a broker restart does",
)
def test_a_worker_waits_for_its_broker_and_reconnects_after_losing_it(worker_process, broker_port):
    """nothing listens at the broker's address: the worker logs "consumer: Cannot connect to …
    Connection refused … Trying again in", stays up and consumes once the broker is up; every
    connection then dropped at once: it logs "consumer: Connection to broker lost. Trying to
    re-establish the connection...", reconnects, and a task published afterwards runs (Celery
    5.7 / kombu 5.7: no silent outage)."""
    wp = worker_process(env=through(broker_port), ready=False)
    log = wp.wait_for_log(TRYING_AGAIN)
    assert CANNOT_CONNECT in log
    assert REFUSED in log
    assert wp.alive()
    broker_port.open()
    wp.wait_for_log(" ready.")
    assert build_report.apply_async((3,), queue=wp.queue).get(timeout=60) == "report 3 built"
    before = connections(wp.log())
    broker_port.cut()
    wp.wait_for_log(LOST)
    wait_until(lambda: connections(wp.log()) > before, 60, what="a reconnection", context=wp)
    assert build_report.apply_async((6,), queue=wp.queue).get(timeout=60) == "report 6 built"


@pytest.mark.antipattern("snippets/troubleshooting/broker_connection.py:retry_on_startup")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(project settings, broker_connection_retry=False, "
    "broker_connection_retry_on_startup unset), CELERY_BROKER_URL=a port nothing listens on",
    reason="the anti-pattern under test",
)
def test_why_broker_connection_retry_false_warns_and_the_worker_exits(worker_process, broker_port):
    """`broker_connection_retry = False` with `broker_connection_retry_on_startup` unset: the
    worker warns "The broker_connection_retry configuration setting will no longer determine …"
    and, with no broker yet, exits instead of waiting."""
    env = through(
        broker_port,
        base="snippets.project.settings",
        CELERY_BROKER_CONNECTION_RETRY=False,
        CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP=None,
    )
    wp = worker_process(env=env, ready=False)
    assert wp.wait_exit(60) != 0
    log = wp.log()
    assert DEPRECATION in log
    assert TRYING_AGAIN not in log


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.troubleshooting.broker_connection, "
    "broker_connection_retry=False)",
    reason="the setting that triggers the warning, with the page's explicit startup setting",
)
def test_an_explicit_retry_on_startup_setting_silences_the_warning(worker_process):
    """the same `broker_connection_retry = False` with `broker_connection_retry_on_startup` set
    explicitly: no warning, and the worker runs a task."""
    wp = worker_process(env=settings_env(base=SETTINGS, CELERY_BROKER_CONNECTION_RETRY=False))
    assert build_report.apply_async((4,), queue=wp.queue).get(timeout=60) == "report 4 built"
    assert DEPRECATION not in wp.log()


# ---------------------------------------------------------------- the publisher's side


def publisher(url: str, module: str = "snippets.project.settings") -> Celery:
    """An app configured from settings `module`, publishing to `url`, as a web process does."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object(module, namespace="CELERY")
    app.conf.broker_read_url = app.conf.broker_write_url = url
    return app


def test_delay_raises_operational_error_when_nothing_listens(broker_port):
    """the broker's address refuses connections: the publish raises
    `kombu.exceptions.OperationalError` (… Connection refused) after Celery's publish retries."""
    app = publisher(broker_port.url)
    with pytest.raises(OperationalError, match=REFUSED) as raised:
        app.send_task(build_report.name, (1,))
    assert f"{type(raised.value).__module__}.{type(raised.value).__name__}" == (
        "kombu.exceptions.OperationalError"
    )


class Publish(threading.Thread):
    """A publish in a thread of its own: the outcome, or still waiting."""

    def __init__(self, app: Celery) -> None:
        super().__init__(daemon=True)
        self.app, self.error = app, None
        self.start()

    def run(self) -> None:
        try:
            self.app.send_task(build_report.name, (1,))
        except Exception as exc:  # the outcome under test
            self.error = exc


@pytest.mark.services("redis")
def test_a_silent_redis_blocks_delay_until_a_socket_timeout_is_set():
    """a Redis address that accepts connections and never answers (a dead host behind a load
    balancer, a half-open connection): with kombu's default, the publish waits for ever; with
    the page's `socket_timeout` it raises `OperationalError: Timeout reading from socket`."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        project, page = publisher(url), publisher(url, SETTINGS)
        # The block replaces the project's transport options: it keeps every entry of them.
        options = page.conf.broker_transport_options
        assert project.conf.broker_transport_options.items() <= options.items()
        waiting = Publish(project)
        bounded = Publish(page)
        bounded.join(120)
        assert not bounded.is_alive()
        assert isinstance(bounded.error, OperationalError)
        assert TIMEOUT in str(bounded.error)
        assert waiting.is_alive()  # still blocked after the bounded one gave up
    waiting.join(60)  # the listener closed: the connection is reset, the thread ends
