"""Retries: retry what a retry can fix, with bounded jittered backoff, and nothing else."""

# --8<-- [start:client]
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from django.conf import settings

from snippets.error_handling.models import Invoice

MAX_RETRY_AFTER = 300  # s: a server's wish is capped, far below the broker's redelivery


class TransientAPIError(Exception):
    """The API said "not now" (5xx): the same request may succeed later."""


class RateLimited(TransientAPIError):
    """The API said when to come back (429 + Retry-After)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


def retry_after(value: str | None, default: int = 60) -> int:
    """Seconds from a Retry-After header: a number or an HTTP date (RFC 9110), capped."""
    if not value:
        seconds = default
    elif value.strip().isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            seconds = default  # unreadable: not a reason to fail the task for good
        else:
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            seconds = int((when - datetime.now(UTC)).total_seconds())
    return max(0, min(seconds, MAX_RETRY_AFTER))  # (1)!


def post_invoice(invoice: Invoice) -> str:
    """Create the invoice at the billing API and return its id there."""
    response = requests.post(
        f"{settings.BILLING_API_URL}/invoices",
        json={"number": invoice.number, "amount_cents": invoice.amount_cents},
        headers={"Idempotency-Key": f"invoice-{invoice.pk}"},  # (2)!
        timeout=(3.05, 10),  # (3)!
    )
    if response.status_code == 429:
        raise RateLimited(retry_after(response.headers.get("Retry-After")))
    if response.status_code >= 500:
        raise TransientAPIError(f"{response.status_code} from the billing API")
    response.raise_for_status()  # any other 4xx: our request is wrong, retrying cannot help
    return response.json()["id"]


# --8<-- [end:client]


# --8<-- [start:task]
from celery import Task, shared_task

# Only errors a later attempt can fix: the network and the server's "not now".
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, TransientAPIError)


@shared_task(
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,  # (1)!
    retry_backoff=5,  # (2)!
    retry_backoff_max=300,  # (3)!
    retry_jitter=True,  # (4)!
    max_retries=8,  # (5)!
)
def push_invoice(self: Task, invoice_id: int) -> str:
    """Push an invoice to the billing API; transient failures retry with backoff."""
    invoice = Invoice.objects.get(pk=invoice_id)  # DoesNotExist: permanent, fails at once
    if invoice.remote_id:
        return invoice.remote_id  # a retry or redelivery after success: nothing to do
    try:
        remote_id = post_invoice(invoice)
    except RateLimited as exc:
        raise self.retry(exc=exc, countdown=exc.retry_after) from exc  # (6)!
    Invoice.objects.filter(pk=invoice_id, remote_id="").update(remote_id=remote_id)
    return remote_id


# --8<-- [end:task]


# --8<-- [start:antipattern]
from celery import Task, shared_task


@shared_task(
    bind=True,
    autoretry_for=(Exception,),  # every error, including the ones a retry cannot fix
    retry_kwargs={"max_retries": 3, "countdown": 1},  # fixed delay, no backoff, no jitter
)
def push_invoice_retry_everything(self: Task, invoice_id: int) -> str:
    """ANTI-PATTERN: a rejected request (4xx) or a missing row is retried like a timeout."""
    invoice = Invoice.objects.get(pk=invoice_id)
    return post_invoice(invoice)


# --8<-- [end:antipattern]


# --8<-- [start:atomic]
from celery import Task, shared_task
from django.db import transaction


@shared_task(
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=8,
)
def push_invoice_locked(self: Task, invoice_id: int) -> str:
    """Push with the invoice row locked (one push at a time); retry once the lock is gone."""
    try:
        with transaction.atomic():  # (1)!
            invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
            if not invoice.remote_id:
                invoice.remote_id = post_invoice(invoice)
                invoice.save(update_fields=["remote_id"])
    except RateLimited as exc:
        raise self.retry(exc=exc, countdown=exc.retry_after) from exc  # (2)!
    return invoice.remote_id


# --8<-- [end:atomic]


# --8<-- [start:atomic_antipattern]
from celery import Task, shared_task
from django.db import transaction  # noqa: F811


@shared_task(bind=True, max_retries=8)
def push_invoice_retry_in_atomic(self: Task, invoice_id: int) -> str:
    """ANTI-PATTERN: self.retry() inside atomic() sends the retry while the row is locked."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if not invoice.remote_id:
            try:
                invoice.remote_id = post_invoice(invoice)
            except RateLimited as exc:
                raise self.retry(exc=exc, countdown=exc.retry_after) from exc
            invoice.save(update_fields=["remote_id"])
    return invoice.remote_id


# --8<-- [end:atomic_antipattern]
