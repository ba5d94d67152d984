"""Worker loss: what becomes of a task when the process running it dies (SIGKILL, OOM)."""

# --8<-- [start:work]
import os
import signal
import time

from celery import Task

from snippets.error_handling.models import Payment, PaymentAttempt, PaymentRequest

# How long the rest of the work takes: 0 here; a proof that kills the task mid-run sets it on
# its worker (a deviation it declares), so the kill finds the task still running.
REST_OF_TASK_SECONDS = float(os.environ.get("SNIPPETS_REST_OF_TASK_SECONDS", "0"))


def parse_natively(document: str) -> str:
    """A STAND-IN for a C-extension parser that crashes on malformed input: a real one
    segfaults (or grows until the OOM killer comes) and its process dies with it. This one
    SIGKILLs its own process on a document nested too deep (over 1000 tags)."""
    if document.count("<") > 1000:
        os.kill(os.getpid(), signal.SIGKILL)
    return document


def capture(task: Task, key: str) -> str:
    """The work: note the attempt, parse the request, capture the payment once per key."""
    PaymentAttempt.objects.create(
        key=key, task_id=task.request.id, retries=task.request.retries, pid=os.getpid()
    )
    parse_natively(PaymentRequest.objects.get(key=key).document)  # poison input kills here
    time.sleep(REST_OF_TASK_SECONDS)  # the rest of the work, a stand-in
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
def capture_payment(self: Task, key: str) -> str:
    """Capture a payment; if the pool child dies mid-task, retry it, at most 3 times."""
    return capture(self, key)


# --8<-- [end:pattern]


# --8<-- [start:requeue]
from celery import shared_task


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, retry_on_worker_lost=False)
def capture_payment_requeue(self: Task, key: str) -> str:
    """Before Celery 5.7: requeue the message when the child dies. No limit on how often."""
    return capture(self, key)


# --8<-- [end:requeue]


# --8<-- [start:early_ack]
from celery import shared_task


@shared_task(
    bind=True,
    acks_late=False,  # Celery's default: the message is acked before the task runs
    retry_on_worker_lost=False,  # Celery's default too (this project turns it on)
)
def capture_payment_early_ack(self: Task, key: str) -> str:
    """ANTI-PATTERN: if the child dies now, the broker has already forgotten the message."""
    return capture(self, key)


# --8<-- [end:early_ack]
