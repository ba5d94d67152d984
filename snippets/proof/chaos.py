"""The tasks the chaos runs prove under database loss. They reuse the credit of
docs/task-design/idempotency.md unchanged, inside one transaction that also holds the rest
of the task's database work: a connection dropped anywhere in it rolls all of it back."""

# --8<-- [start:db_resilient]
from celery import Task, shared_task
from django.db import InterfaceError, OperationalError, transaction

from snippets.task_design.idempotency import apply_credit, rest_of_task


def credit_in_one_transaction(account_id: int, amount_cents: int, idempotency_key: str) -> str:
    """The key, the credit and the rest of the work commit together, or not at all."""
    with transaction.atomic():
        applied = apply_credit(account_id, amount_cents, idempotency_key)
        rest_of_task(account_id)  # the rest of the transaction: where a dropped connection hits
    return "applied" if applied else "duplicate"


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    retry_on_worker_lost=False,  # requeue a killed run at once (the project default retries)
    autoretry_for=(OperationalError, InterfaceError),  # (1)!
    retry_backoff=1,
    retry_backoff_max=4,
    retry_jitter=True,
    max_retries=8,
)
def credit_surviving_db_loss(
    self: Task, account_id: int, amount_cents: int, idempotency_key: str
) -> str:
    """A dropped connection rolls the transaction back; the retry gets a new connection."""
    return credit_in_one_transaction(account_id, amount_cents, idempotency_key)  # (2)!


# --8<-- [end:db_resilient]


# --8<-- [start:no_db_retry]
from celery import shared_task


@shared_task(
    acks_late=True,
)
def credit_without_db_retry(account_id: int, amount_cents: int, idempotency_key: str) -> str:
    """ANTI-PATTERN: a dropped connection fails the task; acked on failure, it is gone."""
    return credit_in_one_transaction(account_id, amount_cents, idempotency_key)


# --8<-- [end:no_db_retry]
