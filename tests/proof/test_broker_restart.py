"""Chaos: the broker restarted several times in one run, publishing and consuming both active.

A private broker of the test's own (a redis-server, or a RabbitMQ node) is restarted while
credits are requested and a prefork worker applies them; effects are counted in PostgreSQL.
The pattern (a broker that keeps what it acknowledged, publish retry sized to a restart,
acks_late + idempotency key, every credit recorded in the outbox and a sweeper that sends
again what was never applied) loses nothing, restart after restart. The anti-pattern (no
persistence on Redis, transient messages on RabbitMQ, Celery's default publish retry) loses
what was queued. Every wait is for an event (a reconnection, a key applied, the queue empty),
never a "nothing moved for N seconds" window a loaded machine can outlast.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from snippets.django_integration.models import OutboxMessage
from snippets.django_integration.transactions import relay_outbox
from snippets.proof.reconcile import send_durably, sweep_unapplied_credits
from snippets.task_design.idempotency import credit_account
from snippets.task_design.models import Account, ProcessedKey
from tests.configuration.helpers import PrivateRedis, settings_env
from tests.harness.brokers import PrivateRabbit
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until
from tests.proof.helpers import TASKS, Clock, Row, broker_name

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.services("broker", "postgres"),
]
ROOT = Path(__file__).resolve().parents[2]
PATTERN = "snippets.proof.broker_restart"
ANTIPATTERN = "snippets.proof.broker_restart_transient"
PAUSE = 0.1  # each task's work: 2 pool children apply at most 20 credits a second
# The anti-pattern's: its loss needs a backlog no consumer has taken when the broker dies, and
# at PAUSE a backlog of 10 is half a second of the worker's work, which a loaded machine's poll
# and kill outlasted (#18: one run never saw the backlog in 120 s, another applied all 40 and
# lost none). At 0.5 s it is 2.5 s of work.
ANTIPATTERN_PAUSE = 0.5
SPACING = 0.01  # between two requests: faster than the worker, so a backlog is queued
RESTARTS = int(os.environ.get("CHAOS_RESTARTS", "3"))  # restarts in one run of the pattern
# Messages a worker had taken but not acknowledged when Redis went down come back after the
# visibility timeout (an hour in production); the run shortens it to see them within the run.
REDIS_REDELIVERY = {"visibility_timeout": 5, "unacked_restore_interval": 1}
# The sweeper re-sends credits published this long ago and not applied: longer than the
# visibility timeout, so it re-sends what Redis will not give back by itself, and than about
# half the backlog's work (at full load), so it seldom re-sends what is merely queued.
SWEEP_AFTER = max(10, TASKS * PAUSE / 2)
INCLUDE = ["--include=snippets.proof.reconcile"]
TICK = 1.0  # the test's beat: relay and sweeper every second (every few seconds in production)
SETTLE = int(
    os.environ.get("DBG_SETTLE", "120")
)  # generous deadline of an event on a loaded 2-core machine; a timeout is a failure


class RestartingRedis(PrivateRedis):
    def restart(self) -> None:
        """Killed like a crash or an OOM kill, then started on the same files."""
        self.stop(signal.SIGKILL)
        self.start()

    def start(self) -> None:
        super().start()
        wait_until(self.answers, 60, what=f"redis-server on port {self.port} answers")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def ready(self, queue: str) -> int:
        """Messages of `queue` waiting for a consumer: in its lists (one per priority step)."""
        client = self.client()
        lists = [queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))]  # kombu's priority keys
        try:
            return sum(client.llen(key) for key in lists)
        except redis.RedisError:
            return -1  # the server is still starting: no answer yet

    def pending(self, queue: str) -> int:
        """Messages of `queue` not yet acknowledged: waiting in its lists, plus kombu's unacked
        record of what a worker has taken."""
        if (ready := self.ready(queue)) < 0:
            return ready
        try:
            return ready + self.client().hlen("unacked")
        except redis.RedisError:
            return -1


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


class Run:
    """One run: a worker on the private broker, a publisher thread, the keys it applied."""

    def __init__(self, worker_process, server, module: str, pause: float = PAUSE) -> None:
        self.server = server
        self.queue = f"restart-{uuid.uuid4().hex[:12]}"
        overrides: dict = {"CELERY_TASK_DEFAULT_QUEUE": self.queue}  # relay and sweeper too
        if broker_name() == "redis":
            overrides["CELERY_BROKER_TRANSPORT_OPTIONS"] = REDIS_REDELIVERY
        env = {
            **settings_env(base=module, **overrides),
            "CELERY_BROKER_URL": server.url,
            "SNIPPETS_REST_OF_TASK_SECONDS": str(pause),  # credit_account's work takes this
        }
        self.start_worker = lambda: worker_process(
            concurrency=2, env=env, queue=self.queue, ready=False, args=INCLUDE
        )
        self.wp = self.start_worker()
        self.wp.wait_for_log(" ready.", timeout=SETTLE)
        self.exits: list[int] = []  # exit codes of workers the "supervisor" replaced
        # The test process's side (the web process and beat) publishes with the same settings.
        self.app = Celery("snippets", set_as_current=False)
        self.app.config_from_object(module, namespace="CELERY")
        # broker_url would yield to the CELERY_BROKER_URL of the test's environment: set the
        # URLs the producer uses.
        self.app.conf.update(
            broker_read_url=server.url, broker_write_url=server.url, task_default_queue=self.queue
        )
        if broker_name() == "redis":
            self.app.conf.broker_transport_options = REDIS_REDELIVERY
        self.account = Account.objects.create()
        self.run = f"restart-{time.time_ns()}"
        self.sent: list[int] = []
        self.failed: list[str] = []
        self.stopping = threading.Event()

    def applied(self) -> int:
        return ProcessedKey.objects.filter(key__startswith=self.run).count()

    def supervise(self) -> bool:
        """Restart the worker if it exited, as systemd's Restart=always does (Production >
        Supervision); True when it is running. On Redis a broker restart can make the worker
        exit: the kombu 5.7 error that docs/proof.md describes."""
        if (code := self.wp.proc.poll()) is None:
            return True
        self.exits.append(code)
        self.wp = self.start_worker()
        return False

    def connections(self) -> int:
        """Connections the worker's consumer has made to the broker so far (its log)."""
        return len(re.findall(r"Connected to (redis|amqp)://", self.wp.log()))

    def thread(self, target: Callable[[], None]) -> threading.Thread:
        """A thread of the test process that publishes through this run's app."""

        def body() -> None:
            self.app.set_current()  # current_app is per thread: delay() goes to this broker
            try:
                target()
            finally:
                connection.close()

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        return thread

    def request_durably(self) -> None:
        """The pattern's caller: each credit is an outbox row first, published by the relay."""
        for i in range(TASKS):
            try:
                send_durably(credit_account, self.account.pk, 1, f"{self.run}-{i}")
                self.sent.append(i)
            except Exception as exc:  # the caller's view: the request failed
                self.failed.append(f"{i}: {exc!r}")
            time.sleep(SPACING)

    def beat(self) -> None:
        """What beat does in production: the relay and the sweeper, every tick."""
        while not self.stopping.wait(TICK):
            try:
                relay_outbox.delay()
                sweep_unapplied_credits.delay(SWEEP_AFTER)
            except OperationalError as exc:  # the broker is down longer than the retry policy
                print(f"beat: {exc!r}; next tick")

    def publish_directly(self) -> None:
        """The anti-pattern's caller: delay() straight to the broker."""
        with self.app.connection_for_write() as conn:
            for i in range(TASKS):
                try:
                    self.app.send_task(
                        credit_account.name,
                        (self.account.pk, 1, f"{self.run}-{i}"),
                        queue=self.queue,
                        connection=conn,
                    )
                    self.sent.append(i)
                except Exception as exc:  # the caller's view: the task is gone
                    self.failed.append(f"{i}: {exc!r}")
                time.sleep(SPACING)

    def restart_when(self, threshold: int, after: int, *, waiting: int = 0) -> float:
        """Restart the broker once `threshold` requests are made, the worker has applied a
        credit since it reconnected (`after`: the count then) and a backlog is queued; return
        the seconds until the worker reconnected. `waiting`: the backlog must hold at least
        that many messages no consumer has taken yet, the ones a broker that keeps nothing
        loses. A backlog the worker has taken outlives the restart in its memory: with any
        backlog at all, two runs of the anti-pattern on a loaded 2-core machine lost nothing,
        the worker (2 credits at a time, PAUSE each) having taken the last queued ones between
        the check and the kill."""

        def backlog() -> bool:
            if waiting:
                return self.server.ready(self.queue) >= waiting
            return self.server.pending(self.queue) > 0

        wait_until(
            lambda: (
                self.supervise()
                and len(self.sent) >= threshold
                and self.applied() > after
                and backlog()
            ),
            SETTLE,
            context=self.wp,
            what=f"{threshold} requests, a credit applied since the last reconnection "
            "and a backlog queued",
        )
        before = self.connections()
        restarted = time.monotonic()
        self.server.restart()
        wait_until(
            lambda: self.connections() > before or not self.supervise(),
            SETTLE,
            context=self.wp,
            what="the worker reconnected or exited",
        )
        return time.monotonic() - restarted

    def until(self, done: Callable[[], bool], what: str) -> None:
        """Wait for `done`; each credit applied on the way is progress that renews the
        deadline, so a long run on a loaded machine waits, and only a run in which nothing is
        applied for SETTLE s (a stuck worker, a lost credit) fails."""
        while not done():
            seen = self.applied()
            wait_until(
                lambda seen=seen: done() or self.applied() > seen,
                SETTLE,
                context=self.wp,
                what=f"{what}, or one more credit applied ({seen} so far)",
            )

    def settled(self) -> bool:
        """Nothing more can be applied: every request is made, every message acknowledged."""
        return (
            self.supervise()
            and len(self.sent) + len(self.failed) == TASKS
            and self.server.pending(self.queue) == 0
        )

    def row(self, variant: str, seconds: float, expected: str) -> Row:
        self.account.refresh_from_db()
        keys, balance = self.applied(), self.account.balance_cents
        return Row(
            "Broker restarted mid-run",
            variant,
            broker_name(),
            TASKS,
            balance,
            balance - keys,
            TASKS - keys,
            seconds,
            expected,
        )


def variant(redis_label: str, rabbitmq_label: str) -> str:
    """The row's label names what differs on this broker (Redis ignores delivery_mode and
    confirm_publish: there, persistence is the AOF)."""
    return redis_label if broker_name() == "redis" else rabbitmq_label


@pytest.mark.timeout(600 + TASKS)
@pytest.mark.parametrize("private_broker", ["persistent"], indirect=True)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=the page's settings module (snippets.proof.broker_restart)",
    reason="the pattern under test; on Redis, a 5 s visibility timeout to see redeliveries",
)
@pytest.mark.deviation(
    "--include", reason="the proof's own tasks (snippets/proof is not a Django app)"
)
@pytest.mark.deviation(
    "SNIPPETS_REST_OF_TASK_SECONDS=PAUSE",
    reason="credit_account's stand-in for the rest of the task takes PAUSE: a backlog builds up",
)
def test_broker_restarted_mid_run_loses_nothing(worker_process, private_broker, record):
    run = Run(worker_process, private_broker, PATTERN)
    reconnects = []
    with Clock() as clock:
        requests = run.thread(run.request_durably)
        beat = run.thread(run.beat)
        after = 0
        for k in range(1, RESTARTS + 1):
            threshold = TASKS * k // (RESTARTS + 1)
            reconnects.append(run.restart_when(threshold, after))
            after = run.applied()
        try:
            requests.join(SETTLE)
            run.until(
                lambda: run.supervise() and run.applied() == TASKS, f"all {TASKS} credits applied"
            )
        finally:
            run.stopping.set()
        beat.join(SETTLE)
    swept = len(re.findall(r"never applied: re-sent", run.wp.log()))
    print(
        f"\nBROKER-RESTART {broker_name()}: {RESTARTS} restarts; reconnected or exited after "
        f"{', '.join(f'{s:.1f}' for s in reconnects)} s; worker exits (restarted by the "
        f"supervisor) {run.exits}; sweeper runs that re-sent credits (last worker) {swept}"
    )
    row = record(
        run.row(
            variant(
                "AOF + publish retry + key + outbox sweeper",
                "durable + publish retry + confirms + key + outbox sweeper",
            ),
            clock.seconds,
            "0 duplicates, 0 lost",
        )
    )
    assert run.failed == []
    assert (row.duplicates, row.lost) == (0, 0)


@pytest.mark.antipattern("snippets/proof/broker_restart_transient.py")
@pytest.mark.parametrize("private_broker", ["transient"], indirect=True)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=the anti-pattern's settings module (transient messages)",
    reason="the anti-pattern under test; on Redis, a 5 s visibility timeout as above",
)
@pytest.mark.deviation(
    "--include", reason="the proof's own tasks (snippets/proof is not a Django app)"
)
@pytest.mark.deviation(
    f"SNIPPETS_REST_OF_TASK_SECONDS={ANTIPATTERN_PAUSE:g}",
    reason=f"credit_account's stand-in for the rest of the task takes {ANTIPATTERN_PAUSE:g} s: "
    "a backlog builds up",
)
def test_why_a_broker_restart_loses_transient_messages(worker_process, private_broker, record):
    """Redis without persistence, or RabbitMQ with transient messages: the backlog queued at
    the restart is gone, and a publish during the restart may fail after ~0.6 s of retry."""
    run = Run(worker_process, private_broker, ANTIPATTERN, pause=ANTIPATTERN_PAUSE)
    with Clock() as clock:
        run.thread(run.publish_directly)
        # 10 waiting: 2.5 s of the worker's work, longer than the poll and the kill take.
        run.restart_when(TASKS // 2, 0, waiting=10)
        run.until(run.settled, "every request made and every message acknowledged")
    row = record(
        run.row(
            variant(
                "no persistence, default retry (anti-pattern)",
                "transient messages, default retry (anti-pattern)",
            ),
            clock.seconds,
            "lost",
        )
    )
    assert row.duplicates == 0
    assert row.lost > 0


@pytest.mark.deviation(
    "--include", reason="the proof's own tasks (snippets/proof is not a Django app)"
)
@pytest.mark.proves_idempotent(task=sweep_unapplied_credits)
def test_sweeper_resends_only_credits_published_long_ago_and_never_applied(worker_process):
    """The sweeper's query on PostgreSQL, run by a worker: what would make it re-send too much
    or too little. Its message delivered again (the same id) re-opens nothing more: a sweep
    that also took the rows it re-opened (`sent_at` unset) would count them again."""
    wp = worker_process(args=INCLUDE)
    account = Account.objects.create()
    long_ago = timezone.now() - timedelta(seconds=SWEEP_AFTER * 2)

    def row(key: str, sent_at, task: str = credit_account.name) -> OutboxMessage:
        return OutboxMessage.objects.create(
            task_name=task, args=[account.pk, 1, key], sent_at=sent_at
        )

    lost = row("lost", long_ago)  # published, never applied: the broker lost it
    applied = row("applied", long_ago)
    ProcessedKey.objects.create(key="applied")
    young = row("young", timezone.now())  # may still be in the queue
    other = row("lost", long_ago, task=relay_outbox.name)  # not a credit: no key to check
    unsent = row("unsent", None)  # the relay's business

    first = sweep_unapplied_credits.apply_async((SWEEP_AFTER,), queue=wp.queue)
    assert first.get(timeout=30) == 1
    reopened = set(OutboxMessage.objects.filter(sent_at=None).values_list("pk", flat=True))
    assert reopened == {lost.pk, unsent.pk}
    assert {applied.pk, young.pk, other.pk}.isdisjoint(reopened)
    again = redeliver(wp, sweep_unapplied_credits, first, (SWEEP_AFTER,))
    assert (again["status"], again["result"]) == ("SUCCESS", 0)  # re-opened once, until sent
    assert set(OutboxMessage.objects.filter(sent_at=None).values_list("pk", flat=True)) == reopened
