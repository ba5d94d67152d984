"""Proof for docs/error-handling/worker-loss.md: SIGKILL of the pool child, on Redis and RabbitMQ.

The broker is the one CELERY_BROKER_URL names: CI runs this file once on Redis, once on RabbitMQ.
"""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest
from billiard.exceptions import WorkerLostError

from snippets.error_handling.worker_loss import (
    capture,
    capture_payment,
    capture_payment_early_ack,
    capture_payment_requeue,
)
from tests.error_handling.helpers import (
    POISON,
    attempts,
    kill_the_child_running,
    payments,
    request_payments,
    retries_seen,
)
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("broker")]

LONG = 5  # seconds the rest of capture() takes on the workers whose task a test kills
REST = {"SNIPPETS_REST_OF_TASK_SECONDS": str(LONG)}
rest_of_task_deviation = pytest.mark.deviation(
    "SNIPPETS_REST_OF_TASK_SECONDS=5",
    reason="the stand-in for the rest of capture() takes 5 s, so the kill finds the task running",
)


def start_workers(worker_process, n: int = 1, env: dict[str, str] | None = None) -> list:
    """Start n prefork workers (one child each) at once, then wait until all answer."""
    workers = [worker_process(ready=False, env=env) for _ in range(n)]
    for wp in workers:
        wp.wait_ready()
    return workers


def drain(wp) -> None:
    """Run one task on the worker: everything queued before it has been dealt with."""
    request_payments("drain")
    assert capture_payment.apply_async(("drain",), queue=wp.queue).get(timeout=60) == "drain"


@pytest.mark.antipattern(task=capture_payment_early_ack)
@pytest.mark.proves_idempotent(task=capture_payment_requeue)
@rest_of_task_deviation
def test_why_early_ack_loses_the_task_that_acks_late_redelivers(worker_process):
    """The same kill, side by side: early ack on one worker, acks_late on the other.

    The requeued task ran twice and captured once; delivered a third time after it ended, it
    still captures nothing more (`Payment.objects.create` instead of `get_or_create` in
    capture() would fail that run on the unique key).
    """
    early_wp, late_wp = start_workers(worker_process, 2, env=REST)
    request_payments("early", "early-calm", "late")
    lost = capture_payment_early_ack.apply_async(("early",), queue=early_wp.queue)
    kept = capture_payment_requeue.apply_async(("late",), queue=late_wp.queue)
    kill_the_child_running("early")
    killed = kill_the_child_running("late")

    # Early ack: the child died mid-task, the task fails and never runs again.
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        lost.get(timeout=60)
    drain(early_wp)
    assert (attempts("early"), payments("early")) == (1, 0)  # the payment is simply lost
    # Without a kill the same task works: the loss only shows when a process dies.
    calm = capture_payment_early_ack.apply_async(("early-calm",), queue=early_wp.queue)
    assert calm.get(timeout=60) == "early-calm"

    # acks_late + reject_on_worker_lost: the message is requeued and the work is done once.
    assert kept.get(timeout=90) == "late"
    assert (retries_seen("late"), payments("late")) == ([0, 0], 1)  # redelivered, not retried
    assert killed not in late_wp.pool_pids()  # the second run was in the replacement child
    # The same message once more, after the run ended (a duplicate delivery): the key holds.
    again = redeliver(late_wp, capture_payment_requeue, kept, ("late",))
    assert (again["status"], again["result"]) == ("SUCCESS", "late")
    assert (attempts("late"), payments("late")) == (3, 1)


@pytest.mark.proves_idempotent(task=capture_payment)
@rest_of_task_deviation
def test_a_killed_task_is_retried_and_charges_once(worker_process):
    """Celery 5.7 task_retry_on_worker_lost: re-sent like retry(), counted in request.retries."""
    [wp] = start_workers(worker_process, env=REST)
    request_payments("retried")
    result = capture_payment.apply_async(("retried",), queue=wp.queue)
    # acks_late: while it runs the broker keeps the message, for the loss of the whole node
    # (the main process too), which no retry sent by the worker can cover.
    assert wp.acked_while_running(result.id) is False
    kill_the_child_running("retried")

    assert result.get(timeout=90) == "retried"
    assert (retries_seen("retried"), payments("retried")) == ([0, 1], 1)  # a retry: retries=1
    assert "Retry in 2s: WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)" in wp.log()


def test_why_requeue_loops_on_a_poison_task_that_retry_on_worker_lost_bounds(worker_process):
    """A document that kills the process parsing it, every time: requeued without end, or
    retried 3 times."""
    looping, bounded = start_workers(worker_process, 2)
    request_payments("loop", "bounded", document=POISON)

    poison = capture_payment_requeue.apply_async(("loop",), queue=looping.queue)
    retried = capture_payment.apply_async(("bounded",), queue=bounded.queue)

    with pytest.raises(WorkerLostError):
        retried.get(timeout=90)
    assert retries_seen("bounded") == [0, 1, 2, 3]  # the run and max_retries=3 retries: FAILURE
    drain(bounded)
    assert attempts("bounded") == 4  # and it stays failed: nothing requeued it

    wait_until(lambda: attempts("loop") > 5, timeout=90, what="the poison task to keep looping")
    assert set(retries_seen("loop")) == {0}  # requeued, not retried: nothing counts the runs
    assert poison.state in {"PENDING", "STARTED"}  # never fails, never ends: it kills a child
    assert payments("loop") == payments("bounded") == 0  # each time, forever


def test_a_poison_document_kills_the_process_parsing_it(monkeypatch):
    """What the poison test relies on, without dying here: parse_natively SIGKILLs its own pid
    on the deeply nested document, and only on it."""
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    task = SimpleNamespace(request=SimpleNamespace(id="t-1", retries=0))
    request_payments("well-formed")
    request_payments("poison", document=POISON)

    assert capture(task, "well-formed") == "well-formed"
    assert kills == []
    assert capture(task, "poison") == "poison"
    assert kills == [(os.getpid(), signal.SIGKILL)]
