"""The test harness: every proof runs against a real Celery worker.

* ``celery_worker`` - a session-scoped in-thread worker (``celery.contrib.testing.worker``)
  consuming the default queue of the snippets app, on whatever broker the environment names
  (memory by default; Redis or RabbitMQ in CI). Tests that use it need committed data:
  ``@pytest.mark.django_db(transaction=True)``.
* ``worker_process`` - a factory for a real ``celery worker`` subprocess (prefork by default)
  for proofs where a process must die (SIGKILL, SIGTERM, time limits). Each one consumes its
  own queue (``wp.queue``): publish to it, or the in-thread worker may take the task.
* ``@pytest.mark.services("redis", "rabbitmq", "postgres", "broker")`` - the test needs real
  services ("broker": the app's broker is a network broker that a subprocess can share).
  Absent, the test is skipped with the reason; with ``SNIPPETS_REQUIRE_SERVICES=1`` (CI) an
  absent service is a failure, so CI runs with zero skips.
* ``bench_record`` - the recorder of the ``bench_*.py`` benchmarks (tests/bench.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from tests.bench import bench_record, pytest_terminal_summary  # noqa: F401  the bench recorder

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("SNIPPETS_REQUIRE_SERVICES") == "1"
SERVICE_URLS = {
    "redis": os.environ.get("SNIPPETS_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "rabbitmq": os.environ.get("SNIPPETS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
DEFAULT_PORTS = {"redis": 6379, "amqp": 5672, "postgres": 5432, "postgresql": 5432}


@cache
def _reachable(url: str) -> bool:
    parts = urlparse(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.split("+")[0], 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def service_missing(name: str) -> str | None:
    """Why the named service is unavailable to this run, or None when it is there."""
    from django.conf import settings

    if name in SERVICE_URLS:
        url = SERVICE_URLS[name]
        return None if _reachable(url) else f"{name} is not reachable at {url}"
    if name == "postgres":
        db = settings.DATABASES["default"]
        if "postgresql" not in db["ENGINE"]:
            return "needs PostgreSQL as the default database (set DATABASE_URL=postgres://...)"
        return None
    if name == "broker":
        url = settings.CELERY_BROKER_URL
        if url.startswith("memory://"):
            return "needs a network broker shared with subprocesses (set CELERY_BROKER_URL)"
        return None if _reachable(url) else f"the broker is not reachable at {url}"
    raise ValueError(f"unknown service {name!r}")


def require_services(*names: str) -> None:
    """Skip (or, under SNIPPETS_REQUIRE_SERVICES=1, fail) unless every named service is up."""
    for name in names:
        if reason := service_missing(name):
            if REQUIRE_SERVICES:
                pytest.fail(f"SNIPPETS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
            pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("services"):
        require_services(*marker.args)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server for Redis-specific proofs (mark the test services("redis"))."""
    return SERVICE_URLS["redis"]


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of the RabbitMQ server for RabbitMQ-specific proofs (services("rabbitmq"))."""
    return SERVICE_URLS["rabbitmq"]


@pytest.fixture(scope="session")
def celery_app():
    from snippets.project.celery import app

    return app


@pytest.fixture(scope="session")
def celery_worker(celery_app, django_db_setup, django_db_blocker):
    """A real worker in a thread, shared by the session; the default queue's consumer."""
    import celery.contrib.testing.tasks  # noqa: F401  registers celery.ping for the ping check
    from celery.contrib.testing.worker import start_worker
    from celery.fixups.django import DjangoWorkerFixup

    # What a `celery worker` process installs: close DB connections around every task.
    fixup = DjangoWorkerFixup(celery_app)
    amqp = celery_app.conf.broker_url.startswith(("amqp", "pyamqp"))
    if celery_app.conf.broker_url.startswith("memory://"):
        celery_app.conf.broker_transport_options = {
            **celery_app.conf.broker_transport_options,
            "polling_interval": 0.05,
        }
    if amqp:
        celery_app.conf.broker_heartbeat = 2  # or the thread takes 10 s to shut down
    with django_db_blocker.unblock():
        fixup.install()
        with start_worker(
            celery_app,
            pool="solo",
            perform_ping_check=True,
            shutdown_timeout=30,
            without_heartbeat=not amqp,
        ) as worker:
            yield worker
        from django.db import connections

        connections.close_all()


@dataclass
class WorkerProcess:
    """A real `celery worker` subprocess consuming its own queue."""

    proc: subprocess.Popen
    hostname: str
    queue: str
    log_path: Path
    app: object = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pool_pids(self) -> list[int]:
        """Pids of the pool's child processes (empty for solo/threads pools)."""
        try:
            return sorted(c.pid for c in psutil.Process(self.proc.pid).children())
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if self.app.control.ping(destination=[self.hostname], timeout=0.5):
                return
        raise TimeoutError(f"worker {self.hostname} not ready after {timeout}s:\n{self.log()}")

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        """Wait until `text` appears in the worker's log; return the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (log := self.log()):
                return log
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in the log of {self.hostname}:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig`, wait for the exit, SIGKILL the process group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def worker_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess of the snippets project, pointed at the test databases."""
    from django.db import connections

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "snippets.project.settings", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for alias in connections:
        env[f"SNIPPETS_{alias.upper()}_DB_NAME"] = str(connections[alias].settings_dict["NAME"])
    return env


@pytest.fixture
def worker_process(celery_app, tmp_path, request) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a real `celery worker` subprocess; stopped (SIGTERM, then SIGKILL) after.

    ``worker_process(pool="prefork", concurrency=1, args=[...], env={...}, app="snippets.project")``
    returns a ready `WorkerProcess`; publish to ``wp.queue``.
    Needs a network broker (memory cannot be shared).
    """
    require_services("broker")
    started: list[WorkerProcess] = []

    def start(
        pool: str = "prefork",
        concurrency: int = 1,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        queue: str | None = None,
        ready: bool = True,
        app: str = "snippets.project",
    ) -> WorkerProcess:
        name = f"wp{len(started)}-{uuid.uuid4().hex[:8]}"
        queue = queue or f"q-{request.node.name[:40]}-{name}"
        log_path = tmp_path / f"{name}.log"
        cmd = [
            sys.executable, "-m", "tests.covered_celery", "-A", app, "worker",
            f"--pool={pool}", f"--concurrency={concurrency}", f"--hostname={name}@%h",
            f"--queues={queue}", "--loglevel=INFO", "--without-gossip", "--without-mingle",
            *(args or []),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=worker_env(**(env or {})), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        hostname = f"{name}@{socket.gethostname()}"
        wp = WorkerProcess(proc, hostname, queue, log_path, celery_app)
        started.append(wp)
        if ready:
            wp.wait_ready()
        return wp

    yield start
    for wp in started:
        wp.stop(signal.SIGTERM, timeout=20)
    from snippets.project.celery import app

    with app.connection_for_write() as conn:
        for wp in started:
            with contextlib.suppress(Exception):
                conn.default_channel.queue_delete(wp.queue)


def published_tasks() -> Iterator[list[dict]]:
    """Record every task this process publishes (name, id, args, headers)."""
    from celery.signals import before_task_publish

    sent: list[dict] = []

    def record(sender=None, body=None, headers=None, **_kw) -> None:
        sent.append(
            {"name": sender, "id": headers.get("id"), "args": list(body[0]), "headers": headers}
        )

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


published = pytest.fixture(published_tasks, name="published")
