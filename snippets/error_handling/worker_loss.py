"""Worker loss: what becomes of a task when the process running it dies (SIGKILL, OOM)."""

# --8<-- [start:work]
import os
import signal
import time

from celery import Task

from snippets.error_handling.models import Payment, PaymentAttempt


def capture(task: Task, key: str, seconds: float, crash: bool) -> str:
    """The work: note the attempt, work for `seconds`, then capture the payment once per key."""
    PaymentAttempt.objects.create(
        key=key, task_id=task.request.id, retries=task.request.retries, pid=os.getpid()
    )
    if crash:  # stands in for input that kills the process: a segfault, the OOM killer
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(seconds)
    Payment.objects.get_or_create(key=key)  # unique key: a second run charges nothing
    return key


# --8<-- [end:work]


# --8<-- [start:pattern]
from celery import shared_task


@shared_task(
    bind=True,
    acks_late=True,  # (1)!
    retry_on_worker_lost=True,  # (2)!
    max_retries=3,  # (3)!
    default_retry_delay=2,  # (4)!
)
def capture_payment(self: Task, key: str, seconds: float = 0.0, crash: bool = False) -> str:
    """Capture a payment; if the pool child dies mid-task, retry it, at most 3 times."""
    return capture(self, key, seconds, crash)


# --8<-- [end:pattern]


# --8<-- [start:requeue]
from celery import shared_task


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, retry_on_worker_lost=False)
def capture_payment_requeue(self: Task, key: str, seconds: float = 0.0, crash: bool = False) -> str:
    """Before Celery 5.7: requeue the message when the child dies. No limit on how often."""
    return capture(self, key, seconds, crash)


# --8<-- [end:requeue]


# --8<-- [start:early_ack]
from celery import shared_task


@shared_task(
    bind=True,
    acks_late=False,  # Celery's default: the message is acked before the task runs
    retry_on_worker_lost=False,  # Celery's default too (this project turns it on)
)
def capture_payment_early_ack(
    self: Task, key: str, seconds: float = 0.0, crash: bool = False
) -> str:
    """ANTI-PATTERN: if the child dies now, the broker has already forgotten the message."""
    return capture(self, key, seconds, crash)


# --8<-- [end:early_ack]
