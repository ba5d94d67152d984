"""Chaos: the broker restarted in the middle of a run, publishing and consuming both active.

A private broker of the test's own (a redis-server, or a RabbitMQ node) is restarted while a
publisher thread sends credits and a prefork worker consumes them; effects are counted in
PostgreSQL. The pattern (durable broker, publish retry sized to a restart, publisher
confirms, acks_late + idempotency key) loses nothing; transient messages with Celery's
default publish retry lose what was queued or being sent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from celery import Celery

from snippets.task_design.idempotency import credit_account
from snippets.task_design.models import Account, ProcessedKey
from tests.configuration.helpers import PrivateRedis, settings_env
from tests.harness.net import free_port
from tests.harness.wait import wait_until
from tests.proof.helpers import TASKS, Clock, Row, broker_name

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.services("broker", "postgres"),
]
ROOT = Path(__file__).resolve().parents[2]
PATTERN = "snippets.proof.broker_restart"
ANTIPATTERN = "snippets.proof.broker_restart_transient"
PAUSE = 0.05  # each task's work
SPACING = 0.01  # between two publishes: faster than the worker, so a backlog is queued
# Messages a worker had taken but not acknowledged when Redis went down come back after the
# visibility timeout (an hour in production); the run shortens it to see them within the run.
REDIS_REDELIVERY = {"visibility_timeout": 5, "unacked_restore_interval": 1}


class PrivateRabbit:
    """A RabbitMQ node of this test's own (its own port, data directory and node name)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.node = f"chaos{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        # Not under pytest's tmp_path: the node runs as the rabbitmq user, who must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-rabbit-"))
        self.dir.chmod(0o777)
        (self.dir / "plugins").write_text("[].\n")

    def ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, *args], check=True, timeout=timeout,
                       capture_output=True)  # fmt: skip

    def start(self) -> None:
        env = {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "none"),
        }
        subprocess.run(["rabbitmq-server", "-detached"], env={**os.environ, **env}, check=True,
                       cwd=self.dir, timeout=60)  # fmt: skip
        # await_startup fails at once until the node has registered with epmd
        started = lambda: self.ctl("await_startup", "--timeout", "60", timeout=70) or True  # noqa: E731
        wait_until(started, 120, what=f"{self.node} started", interval=0.5,
                   ignore=(subprocess.CalledProcessError,))  # fmt: skip

    def restart(self) -> None:
        """The broker application stops (every connection closed) and starts from disk."""
        self.ctl("stop_app")
        self.ctl("start_app")

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "shutdown"], timeout=60,
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


class RestartingRedis(PrivateRedis):
    def restart(self) -> None:
        """Killed like a crash or an OOM kill, then started on the same files."""
        self.stop(signal.SIGKILL)
        self.start()


@pytest.fixture
def private_broker(tmp_path, request):
    """A broker of the same kind as the run's, private to the test; stopped after."""
    persistent = request.param == "persistent"
    if broker_name() == "redis":
        conf = ROOT / "snippets" / "proof" / "redis.conf"
        server = RestartingRedis(
            tmp_path, (str(conf),) if persistent else PrivateRedis.NO_PERSISTENCE
        )
    else:
        if not shutil.which("rabbitmq-server"):
            pytest.fail("rabbitmq-server is not installed")
        server = PrivateRabbit()
    server.start()
    yield server
    server.stop()


def publisher(
    module: str, url: str, queue: str, account: Account, run: str, sent: list, failed: list
) -> threading.Thread:
    """Send TASKS credits one by one, configured from `module`; record each send's outcome."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object(module, namespace="CELERY")

    def send_all() -> None:
        with app.connection_for_write(url) as conn:
            for i in range(TASKS):
                try:
                    app.send_task(credit_account.name, (account.pk, 1, f"{run}-{i}", PAUSE),
                                  queue=queue, connection=conn)  # fmt: skip
                    sent.append(i)
                except Exception as exc:  # the caller's view: the task is gone
                    failed.append(f"{i}: {exc!r}")
                time.sleep(SPACING)

    thread = threading.Thread(target=send_all, daemon=True)
    thread.start()
    return thread


def until_settled(applied, thread: threading.Thread, stall: float = 15) -> None:
    """Return once every task is applied, or nothing moved for `stall` s after publishing."""
    last, since = -1, time.monotonic()
    while (count := applied()) < TASKS:
        if count != last:
            last, since = count, time.monotonic()
        elif not thread.is_alive() and time.monotonic() - since > stall:
            return
        time.sleep(0.2)


def restart_run(worker_process, server, module: str) -> tuple[int, int, list[str], float, str]:
    """(keys applied, balance, failed sends, wall time, worker log) of one restart run."""
    overrides = (
        {"CELERY_BROKER_TRANSPORT_OPTIONS": REDIS_REDELIVERY} if broker_name() == "redis" else {}
    )
    env = {**settings_env(base=module, **overrides), "CELERY_BROKER_URL": server.url}
    wp = worker_process(concurrency=2, env=env, ready=False)
    wp.wait_for_log(" ready.", timeout=60)
    account = Account.objects.create()
    run = f"restart-{time.time_ns()}"
    applied = lambda: ProcessedKey.objects.filter(key__startswith=run).count()  # noqa: E731
    sent: list[int] = []
    failed: list[str] = []
    with Clock() as clock:
        thread = publisher(module, server.url, wp.queue, account, run, sent, failed)
        while len(sent) < TASKS // 2 or not applied():  # publishing and consuming both going
            time.sleep(0.01)
        server.restart()
        until_settled(applied, thread)
        thread.join(120)
    account.refresh_from_db()
    keys = applied()
    log = wp.log()
    wp.stop()
    return keys, account.balance_cents, failed, clock.seconds, log


@pytest.mark.parametrize("private_broker", ["persistent"], indirect=True)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=the page's settings module (snippets.proof.broker_restart)",
    reason="the pattern under test; on Redis, a 5 s visibility timeout to see redeliveries",
)
def test_broker_restarted_mid_run_loses_nothing(worker_process, private_broker, record):
    keys, balance, failed, seconds, log = restart_run(worker_process, private_broker, PATTERN)
    row = record(Row("Broker restarted mid-run", "durable + publish retry + confirms + key",
                     broker_name(), TASKS, balance, balance - keys, TASKS - keys, seconds,
                     "0 duplicates, 0 lost"))  # fmt: skip
    assert "Connection to broker lost" in log  # the restart did hit the worker
    assert failed == []
    assert (row.duplicates, row.lost) == (0, 0)


@pytest.mark.antipattern("CELERY_TASK_DEFAULT_DELIVERY_MODE = 'transient'")
@pytest.mark.parametrize("private_broker", ["transient"], indirect=True)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=the anti-pattern's settings module (transient messages)",
    reason="the anti-pattern under test; on Redis, a 5 s visibility timeout as above",
)
def test_why_a_broker_restart_loses_transient_messages(worker_process, private_broker, record):
    """Redis without persistence, or RabbitMQ with transient messages: the backlog queued at
    the restart is gone, and a publish during the restart may fail after ~0.6 s of retry."""
    keys, balance, _failed, seconds, log = restart_run(worker_process, private_broker, ANTIPATTERN)
    row = record(Row("Broker restarted mid-run", "transient messages, default retry (anti-pattern)",
                     broker_name(), TASKS, balance, balance - keys, TASKS - keys, seconds,
                     "lost"))  # fmt: skip
    assert "Connection to broker lost" in log
    assert row.duplicates == 0
    assert row.lost > 0
