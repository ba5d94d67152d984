"""Proof for docs/troubleshooting/redelivery-and-timeouts.md: a private RabbitMQ node of the
test's own (never the shared server) with a short `consumer_timeout`, and real prefork workers
running a late-acked task longer than it, without and with a time limit below it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from celery import Celery

from snippets.configuration.worker_settings import record_run
from snippets.project import settings as project_settings
from snippets.troubleshooting import redelivery_and_timeouts as page
from tests.configuration.helpers import runs_of, settings_env
from tests.harness.brokers import PrivateRabbit
from tests.harness.wait import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("postgres")]

SETTINGS = "snippets.troubleshooting.redelivery_and_timeouts"
TIMED_OUT = "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out"
CONSUMER_TIMEOUT_MS = 3000  # production: 1800000 (30 min), RabbitMQ's default
# RabbitMQ checks the timeout on each channel tick (every 60 s by default): every second here.
ADVANCED = (
    f"[{{rabbit, [{{consumer_timeout, {CONSUMER_TIMEOUT_MS}}}, {{channel_tick_interval, 1000}}]}}]."
)
UNRECOVERABLE = "CRITICAL/MainProcess] Unrecoverable error: "
TASK_SECONDS = 8.0  # longer than the consumer timeout plus a tick
# The brokers' windows by default: RabbitMQ's consumer_timeout, Redis's visibility_timeout.
BROKER_WINDOWS_S = {"rabbitmq": 30 * 60, "redis": 60 * 60}


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateRabbit]:
    if not shutil.which("rabbitmq-server"):
        pytest.fail("rabbitmq-server is not installed")
    node = PrivateRabbit(ADVANCED + "\n")
    node.start()
    yield node
    node.stop()


def publisher(url: str) -> Celery:
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("snippets.project.settings", namespace="CELERY")
    app.conf.broker_read_url = app.conf.broker_write_url = url
    return app


@pytest.mark.antipattern("snippets/troubleshooting/redelivery_and_timeouts.py:time_limits")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.project.settings), "
    "CELERY_BROKER_URL=a private RabbitMQ node with consumer_timeout 3 s",
    reason="a task longer than the node's consumer_timeout, as a 31-minute task is in production",
)
def test_why_a_task_longer_than_consumer_timeout_kills_the_worker_and_is_requeued(
    worker_process, rabbit
):
    """a late-acked task running past `consumer_timeout`: RabbitMQ closes the channel with
    "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out", the worker logs
    "Unrecoverable error" and exits, and the message is back in the queue: the next worker
    runs the task again, and again times out."""
    env = {**settings_env(), "CELERY_BROKER_URL": rabbit.url}
    wp = worker_process(env=env, ready=False)
    wp.wait_for_log(" ready.", timeout=120)
    result = publisher(rabbit.url).send_task(
        record_run.name, ("consumer-timeout", TASK_SECONDS), queue=wp.queue
    )
    log = wp.wait_for_log(TIMED_OUT, timeout=120)
    assert f"Timeout value used: {CONSUMER_TIMEOUT_MS} ms" in log
    assert f"{UNRECOVERABLE}PreconditionFailed(406, '{TIMED_OUT}" in log
    wp.wait_exit(120)  # the whole worker, not only the task
    assert len(runs_of(result.id)) == 1
    assert rabbit.pending(wp.queue) == 1  # unacknowledged, so requeued: it will run again


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.troubleshooting.redelivery_and_timeouts, "
    "time limits 1 s / 2 s), CELERY_BROKER_URL=a private RabbitMQ node with consumer_timeout 3 s",
    reason="the page's rule (hard time limit below consumer_timeout), scaled to the 3 s node",
)
def test_a_time_limit_below_consumer_timeout_acks_before_rabbitmq_gives_up(worker_process, rabbit):
    """the same task with soft/hard time limits below `consumer_timeout`: it is stopped, marked
    FAILURE and acknowledged in time; no PRECONDITION_FAILED, one run, and the worker's
    connection still serves the next task."""
    # The page's values keep that rule in production: the soft limit first, then the hard one,
    # both inside either broker's window; and they are the project's settings, as it says.
    soft, hard = page.CELERY_TASK_SOFT_TIME_LIMIT, page.CELERY_TASK_TIME_LIMIT
    assert 0 < soft < hard < min(BROKER_WINDOWS_S.values())
    limits = (project_settings.CELERY_TASK_SOFT_TIME_LIMIT, project_settings.CELERY_TASK_TIME_LIMIT)
    assert (soft, hard) == limits
    env = {
        **settings_env(base=SETTINGS, CELERY_TASK_SOFT_TIME_LIMIT=1, CELERY_TASK_TIME_LIMIT=2),
        "CELERY_BROKER_URL": rabbit.url,
    }
    wp = worker_process(env=env, ready=False)
    wp.wait_for_log(" ready.", timeout=120)
    app = publisher(rabbit.url)
    long = app.send_task(record_run.name, ("time-limited", TASK_SECONDS), queue=wp.queue)
    wait_until(
        lambda: long.state == "FAILURE", 60, what="the task stopped by its limit", context=wp
    )
    short = app.send_task(record_run.name, ("next", 0.0), queue=wp.queue)
    short.get(timeout=60)
    wp.wait_for_log("SoftTimeLimitExceeded")
    assert TIMED_OUT not in wp.log()
    assert len(runs_of(long.id)) == 1
