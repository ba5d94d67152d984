"""Benchmark for docs/configuration/worker-settings.md and brokers.md (not a timed test).

Tiny tasks (``snippets.task_design.canvas.add``) through a real prefork worker (concurrency 2)
on Redis and on RabbitMQ, at Celery's defaults and tuned for short tasks: a higher prefetch
multiplier (worker-settings.md: the defaults suit short, uniform tasks, and more so with a larger
buffer) and ``task_ignore_result`` (result-backends.md: nothing written to the backend). The
queue is filled first while the worker does not consume it; the clock runs from ``add_consumer``
until the worker has taken every task. Tasks per second per variant, alternating in one run
(tests/bench.py).

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... CELERY_RESULT_BACKEND=redis://... \\
    SNIPPETS_REDIS_URL=redis://... SNIPPETS_AMQP_URL=amqp://... \\
      .venv/bin/pytest tests/configuration/bench_throughput.py -p no:cov -s
"""

from __future__ import annotations

import contextlib
import time

import pytest
from celery import Celery

from tests.bench import BenchRow, alternating, ratios, scaled
from tests.configuration.helpers import settings_env
from tests.harness.wait import wait_until

TASKS = scaled(5_000)
ADD = "snippets.task_design.canvas.add"
MULTIPLIER = 16
# What a project without CELERY_ settings gets (the project's own settings differ on each line).
CELERY_DEFAULTS = {
    "CELERY_TASK_ACKS_LATE": False,
    "CELERY_WORKER_PREFETCH_MULTIPLIER": 4,
    "CELERY_TASK_TRACK_STARTED": False,
    "CELERY_WORKER_SEND_TASK_EVENTS": False,
    "CELERY_TASK_SEND_SENT_EVENT": False,
    "CELERY_TASK_SOFT_TIME_LIMIT": None,
    "CELERY_TASK_TIME_LIMIT": None,
}
TUNED = {
    **CELERY_DEFAULTS,
    "CELERY_WORKER_PREFETCH_MULTIPLIER": MULTIPLIER,
    "CELERY_TASK_IGNORE_RESULT": True,
}
BROKERS = {"redis": ("Redis", "redis_url"), "rabbitmq": ("RabbitMQ", "amqp_url")}

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("broker")]


def publisher(url: str) -> Celery:
    """An app on the broker under test (the project's app publishes to the configured one)."""
    app = Celery("bench-publisher", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


def taken(app: Celery, hostname: str) -> int:
    """How many tasks the worker has taken so far (its `celery inspect stats` total)."""
    stats = (app.control.inspect([hostname], timeout=1).stats() or {}).get(hostname, {})
    return stats.get("total", {}).get(ADD, 0)


def tasks_per_second(worker_process, url: str, overrides: dict) -> float:
    app = publisher(url)
    env = settings_env(CELERY_BROKER_URL=url, **overrides)
    wp = worker_process(concurrency=2, env=env, ready=False)
    wp.app = app  # ping it on its own broker
    try:
        wp.wait_ready()
        app.control.cancel_consumer(wp.queue, destination=[wp.hostname], reply=True, timeout=5)
        with app.producer_or_acquire() as producer:
            for i in range(TASKS):
                app.send_task(ADD, (i, i), queue=wp.queue, producer=producer)
        started = time.perf_counter()
        app.control.add_consumer(wp.queue, destination=[wp.hostname], reply=True, timeout=5)
        wait_until(lambda: taken(app, wp.hostname) >= TASKS, timeout=600, what="every task")
        seconds = time.perf_counter() - started
    finally:
        wp.stop()
        with app.connection_for_write() as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_delete(wp.queue)
        app.close()
    return TASKS / seconds


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    "broker", [pytest.param(name, marks=pytest.mark.services(name)) for name in BROKERS]
)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(defaults vs tuned)",
    reason="the benchmark compares the two settings",
)
def test_bench_throughput_defaults_vs_tuned(broker, worker_process, request, bench_record):
    label, fixture = BROKERS[broker]
    url = request.getfixturevalue(fixture)
    t = alternating(
        {
            "defaults": lambda: tasks_per_second(worker_process, url, CELERY_DEFAULTS),
            "tuned": lambda: tasks_per_second(worker_process, url, TUNED),
        }
    )
    bench_record(
        BenchRow(
            f"Throughput, {label}",
            "Celery defaults: prefetch multiplier 4, results stored",
            f"prefetch multiplier {MULTIPLIER}, task_ignore_result",
            f"{TASKS:,} tiny tasks, prefork worker, concurrency 2",
            t["defaults"].show("tasks/s", 0),
            t["tuned"].show("tasks/s", 0),
            ratios(t["tuned"], t["defaults"]),
        )
    )
