"""Helpers of the Configuration proofs."""

from __future__ import annotations

import gc
import json
import signal
from pathlib import Path
from typing import Any

from snippets.configuration.models import TaskRun
from snippets.configuration.worker_settings import record_run
from tests.harness.net import free_port
from tests.harness.process import Process
from tests.harness.wait import wait_until

SETTINGS_OVERRIDE = "tests.configuration.settings_override"


def settings_env(base: str = "snippets.project.settings", **overrides: Any) -> dict[str, str]:
    """Environment for `worker_process(env=...)`: Django settings `base` plus `overrides`."""
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS_OVERRIDE,
        "SNIPPETS_BASE_SETTINGS": base,
        "SNIPPETS_SETTINGS_OVERRIDES": json.dumps(overrides),
    }


def runs_of(task_id: str) -> list[TaskRun]:
    return list(TaskRun.objects.filter(task_id=task_id).order_by("started_at"))


class PrivateRedis:
    """A redis-server of this test's own, on a free port; started and stopped by the test.
    `persistence`: a config file path and/or options (default: nothing is ever written)."""

    NO_PERSISTENCE = ("--save", "", "--appendonly", "no")

    def __init__(self, tmp_path: Path, persistence: tuple[str, ...] = NO_PERSISTENCE) -> None:
        self.port = free_port()
        self.persistence = persistence
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.server: Process | None = None

    def start(self) -> None:
        self.server = Process.spawn(
            [
                "redis-server",
                *self.persistence,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
            ],
            log_path=self.dir / f"redis-{self.port}.log",
            name="redis-server",
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        # A result still pending when its test ends (a timed-out `get`) is held by its app's
        # backend in a reference cycle. Collected after its server is gone, its `__del__`
        # unsubscribes from that server and retries for 20 s (celery/backends/redis.py,
        # `_reconnect_pubsub`) in whatever thread the collection ran: in one CI run the
        # in-thread worker of a later test, whose RabbitMQ heartbeat then lapsed and whose
        # task ran twice. So the garbage goes while the server still answers.
        gc.collect()
        if self.server is not None:
            self.server.stop(sig, timeout=10)


# Prefetch proofs (reused by bench_prefetch.py).
CELERY_DEFAULTS = {"CELERY_TASK_ACKS_LATE": False, "CELERY_WORKER_PREFETCH_MULTIPLIER": 4}
PROJECT = {"CELERY_TASK_ACKS_LATE": True, "CELERY_WORKER_PREFETCH_MULTIPLIER": 1}
EARLY_ACKS_MULTIPLIER_1 = {"CELERY_TASK_ACKS_LATE": False, "CELERY_WORKER_PREFETCH_MULTIPLIER": 1}


def reserved_ids(app, hostname: str) -> set[str]:
    replies = app.control.inspect([hostname], timeout=1).reserved() or {}
    return {r["id"] for r in replies.get(hostname, [])}


def short_behind_long(worker_process, celery_app, overrides: dict, *, prefetched: bool):
    """Worker A (concurrency 1) runs a long task; a short one is published; then an idle
    worker B starts consuming the same queue. Return (long run, short run)."""
    env = settings_env(**overrides)
    a = worker_process(concurrency=1, env=env)
    b = worker_process(concurrency=1, env=env)  # idle: consumes only its own queue for now
    long = record_run.apply_async(("long", 5.0), queue=a.queue)
    wait_until(lambda: runs_of(long.id), what="the long task to start on A")
    short = record_run.apply_async(("short", 0.0), queue=a.queue)
    if prefetched:  # A takes the short task into its prefetch buffer although it is busy
        wait_until(lambda: short.id in reserved_ids(celery_app, a.hostname), what="A to reserve")
    else:  # A leaves it in the queue: give it ample chance to take it, it must not
        for _ in range(5):
            assert short.id not in reserved_ids(celery_app, a.hostname)
    celery_app.control.add_consumer(a.queue, destination=[b.hostname], reply=True, timeout=5)
    short.get(timeout=60)
    long.get(timeout=60)
    [long_run], [short_run] = runs_of(long.id), runs_of(short.id)
    return long_run, short_run, a, b
