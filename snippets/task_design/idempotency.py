"""Idempotency: a task that can be delivered twice must do its work once."""

# --8<-- [start:key]
import logging

from django.db import transaction
from django.db.models import F

from snippets.task_design.models import Account, ProcessedKey

logger = logging.getLogger(__name__)


def apply_credit(account_id: int, amount_cents: int, idempotency_key: str) -> bool:
    """Credit the account once per key; return False when this key was already applied."""
    with transaction.atomic():  # (1)!
        _, new = ProcessedKey.objects.get_or_create(key=idempotency_key)  # (2)!
        if not new:
            return False
        credited = Account.objects.filter(pk=account_id).update(
            balance_cents=F("balance_cents") + amount_cents
        )
        if not credited:
            raise Account.DoesNotExist(f"account {account_id} does not exist")  # (3)!
    return True


# --8<-- [end:key]


# --8<-- [start:rest]
import os
import time

# How long the stand-in takes: 0 here; a proof that kills the task after its commit sets it
# on its worker (a deviation it declares), so the kill lands inside the rest of the task.
REST_OF_TASK_SECONDS = float(os.environ.get("SNIPPETS_REST_OF_TASK_SECONDS", "0"))


def rest_of_task(account_id: int) -> None:
    """What the task still does after the commit (database work, logging). A stand-in."""
    time.sleep(REST_OF_TASK_SECONDS)


# --8<-- [end:rest]


# --8<-- [start:task]
from celery import Task, shared_task


def credit_once(task: Task, account_id: int, amount_cents: int, idempotency_key: str) -> str:
    """The body of the credit tasks: the key makes a second delivery a logged no-op."""
    if not apply_credit(account_id, amount_cents, idempotency_key):
        logger.warning(
            "%s[%s]: key %r already applied to account %s, skipping (redelivered=%s)",
            task.name, task.request.id, idempotency_key, account_id,
            (task.request.delivery_info or {}).get("redelivered"),
        )  # fmt: skip
        return "duplicate"
    rest_of_task(account_id)  # (1)!
    return "applied"


@shared_task(
    bind=True,
    acks_late=True,  # (2)!
    reject_on_worker_lost=True,  # (3)!
    retry_on_worker_lost=False,
)
def credit_account(self: Task, account_id: int, amount_cents: int, idempotency_key: str) -> str:
    """Credit an account; safe to deliver any number of times with the same key."""
    return credit_once(self, account_id, amount_cents, idempotency_key)


@shared_task(
    bind=True,
    acks_late=True,
    retry_on_worker_lost=True,  # (4)!
    default_retry_delay=1,
    max_retries=3,
)
def credit_account_retrying(
    self: Task, account_id: int, amount_cents: int, idempotency_key: str
) -> str:
    """The same credit, re-sent as a retry (counted against max_retries) if its child dies."""
    return credit_once(self, account_id, amount_cents, idempotency_key)


# --8<-- [end:task]


# --8<-- [start:conditional]
import logging

from celery import shared_task
from django.utils import timezone

from snippets.task_design.models import Invoice

logger = logging.getLogger(__name__)


@shared_task
def mark_invoice_paid(invoice_id: int) -> bool:
    """Move an invoice from open to paid; a second delivery finds nothing to move."""
    moved = Invoice.objects.filter(pk=invoice_id, status=Invoice.Status.OPEN).update(
        status=Invoice.Status.PAID, paid_at=timezone.now()
    )  # (1)!
    if not moved:
        logger.info("invoice %s is not open (already paid or unknown): nothing to do", invoice_id)
        return False
    # Side effects of the transition (a receipt e-mail...) go here: only the winner runs them.
    return True


# --8<-- [end:conditional]


# --8<-- [start:antipattern]
import time  # noqa: F811

from celery import shared_task
from django.db.models import F  # noqa: F811

from snippets.task_design.models import Account  # noqa: F811


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    retry_on_worker_lost=False,
)
def credit_account_without_key(account_id: int, amount_cents: int, pause: float = 0.0) -> str:
    """ANTI-PATTERN: redelivered after a crash, it credits the account a second time."""
    Account.objects.filter(pk=account_id).update(balance_cents=F("balance_cents") + amount_cents)
    time.sleep(pause)
    return "applied"


# --8<-- [end:antipattern]


# --8<-- [start:external]
import json
import os
import urllib.request

from celery import Task, shared_task

from snippets.task_design.models import Charge


def provider_charge(amount_cents: int, idempotency_key: str) -> str:
    """Ask the payment provider for a charge; its id. The same key gets the same charge."""
    request = urllib.request.Request(
        os.environ["PAYMENT_PROVIDER_URL"] + "/charges",
        data=json.dumps({"amount_cents": amount_cents}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},  # (1)!
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


@shared_task(
    bind=True,
    acks_late=True,
    retry_on_worker_lost=True,  # the project default, stated: this task must not be lost
    default_retry_delay=5,  # (2)!
)
def charge_order(self: Task, order_id: int, amount_cents: int, idempotency_key: str) -> str:
    """Charge an order once, however often the task runs and wherever a run dies."""
    charge, _ = Charge.objects.get_or_create(
        key=idempotency_key, defaults={"order_id": order_id, "amount_cents": amount_cents}
    )  # (3)!
    if charge.status == Charge.Status.CHARGED:
        return "duplicate"  # (4)!
    provider_id = provider_charge(charge.amount_cents, charge.key)  # (5)!
    Charge.objects.filter(pk=charge.pk, status=Charge.Status.PENDING).update(
        status=Charge.Status.CHARGED, provider_charge_id=provider_id
    )  # (6)!
    return "charged"


# --8<-- [end:external]


# --8<-- [start:key_first]
from celery import Task, shared_task
from django.db import IntegrityError

from snippets.task_design.models import ProcessedKey  # noqa: F811


@shared_task(
    bind=True,
    acks_late=True,
    default_retry_delay=5,
)
def charge_order_key_first(
    self: Task, order_id: int, amount_cents: int, idempotency_key: str
) -> str:
    """ANTI-PATTERN: the database key commits, then the call: a crash between skips it."""
    try:
        ProcessedKey.objects.create(key=idempotency_key)
    except IntegrityError:
        return "duplicate"  # also what the rerun after a crash sees: nothing was charged
    provider_charge(amount_cents, idempotency_key)
    return "charged"


# --8<-- [end:key_first]


# --8<-- [start:retention]
from datetime import timedelta

from celery import shared_task
from django.utils import timezone  # noqa: F811

from snippets.task_design.models import ProcessedKey  # noqa: F811

# Longer than any second delivery of a keyed task can come, with a wide margin: the Redis
# visibility timeout, RabbitMQ's consumer_timeout, a task's retries (max_retries x delay).
KEY_RETENTION = timedelta(days=7)  # (1)!

PURGE_SCHEDULE = {  # (2)!
    "purge-processed-keys": {
        "task": "snippets.task_design.idempotency.purge_processed_keys",
        "schedule": timedelta(hours=1),
        "options": {"expires": 50 * 60},
    },
}


@shared_task(soft_time_limit=50, time_limit=60)
def purge_processed_keys() -> int:
    """Delete the keys older than KEY_RETENTION; return how many went."""
    cutoff = timezone.now() - KEY_RETENTION
    deleted, _ = ProcessedKey.objects.filter(created_at__lt=cutoff).delete()  # (3)!
    return deleted


# --8<-- [end:retention]


# --8<-- [start:chord]
from celery import chord


def credit_batch_then_pay(invoice_id: int, credits: list[tuple[int, int]]) -> chord:
    """Credit each account (one chord member per credit), then mark the invoice paid."""
    members = [
        credit_account.s(account_id, amount_cents, f"invoice-{invoice_id}-{account_id}")  # (1)!
        for account_id, amount_cents in credits
    ]
    return chord(members, mark_invoice_paid.si(invoice_id))  # (2)!


# --8<-- [end:chord]
