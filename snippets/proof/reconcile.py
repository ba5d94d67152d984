"""What makes "0 lost" hold on Redis too: every credit is recorded in the database before
it is published (the transactional outbox of docs/django-integration/transactions.md, reused
unchanged), and a sweeper publishes again what was published but never applied. A message
the broker lost (Redis's BRPOP window, see docs/proof.md) is sent again; one that was only
slow runs twice and the idempotency key makes the second run a no-op."""

# --8<-- [start:request]
from celery import Task
from django.db import transaction

from snippets.django_integration.models import OutboxMessage
from snippets.django_integration.transactions import relay_outbox


def send_durably(task: Task, *args: object) -> OutboxMessage:
    """Record the task in the caller's transaction; the relay publishes it after the commit."""
    with transaction.atomic():
        row = OutboxMessage.objects.create(task_name=task.name, args=list(args))  # (1)!
        transaction.on_commit(relay_outbox.delay, robust=True)  # (2)!
    return row


# --8<-- [end:request]


# --8<-- [start:sweeper]
import logging
from datetime import timedelta

from celery import shared_task
from django.db.models import Exists, OuterRef
from django.db.models.fields.json import KT
from django.utils import timezone

from snippets.task_design.idempotency import credit_account
from snippets.task_design.models import ProcessedKey

logger = logging.getLogger(__name__)


@shared_task
def sweep_unapplied_credits(after: float = 600) -> int:
    """Re-open the credits published over `after` s ago whose key was never applied."""
    cutoff = timezone.now() - timedelta(seconds=after)  # (1)!
    unapplied = (
        OutboxMessage.objects.filter(task_name=credit_account.name, sent_at__lt=cutoff)
        .alias(key=KT("args__2"))  # credit_account(account_id, amount_cents, idempotency_key)
        .exclude(Exists(ProcessedKey.objects.filter(key=OuterRef("key"))))  # (2)!
    )
    reopened = OutboxMessage.objects.filter(
        pk__in=list(unapplied.values_list("pk", flat=True)), sent_at__lt=cutoff
    ).update(sent_at=None)  # (3)!
    if reopened:
        logger.warning("%d credit(s) published before %s never applied: re-sent", reopened, cutoff)
    return reopened


# --8<-- [end:sweeper]
