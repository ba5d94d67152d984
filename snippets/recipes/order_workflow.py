"""Order workflow: reserve, charge once, confirm; every step a conditional state change."""

# --8<-- [start:start]
from celery import Signature, chain
from django.db import transaction

from snippets.recipes.models import Order


def order_workflow(order_id: int) -> Signature:
    """Reserve, charge, confirm; each step reads the order's state, so it can start again."""
    return chain(
        reserve_stock.si(order_id),  # (1)!
        charge_payment.si(order_id),
        send_confirmation.si(order_id),
    ).on_error(handle_order_failure.si(order_id))  # (2)!


def place_order(email: str, sku: str, quantity: int, amount_cents: int) -> Order:
    """Create the order; start its workflow only if the order commits."""
    with transaction.atomic():
        order = Order.objects.create(
            email=email, sku=sku, quantity=quantity, amount_cents=amount_cents
        )
        transaction.on_commit(order_workflow(order.pk).delay, robust=True)  # (3)!
    return order


# --8<-- [end:start]


# --8<-- [start:reserve]
import logging

import requests
from celery import Task, shared_task
from celery.exceptions import Ignore
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from snippets.recipes import payments
from snippets.recipes.models import StockItem

logger = logging.getLogger("snippets.recipes.order_workflow")
S = Order.Status


@shared_task(soft_time_limit=30, time_limit=60)
def reserve_stock(order_id: int) -> str:
    """PENDING -> RESERVED, or OUT_OF_STOCK: a business outcome that ends the workflow."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != S.PENDING:
            logger.info("order %s is already %s: nothing to reserve", order_id, order.status)
            return order.status  # a redelivery: the next step checks the state again
        reserved = StockItem.objects.filter(sku=order.sku, available__gte=order.quantity).update(
            available=F("available") - order.quantity
        )  # (1)!
        order.status = S.RESERVED if reserved else S.OUT_OF_STOCK
        order.save(update_fields=["status"])
        if not reserved:
            notify_order_failed.delay_on_commit(order_id)
    if not reserved:
        logger.info("order %s: %s is out of stock; customer told", order_id, order.sku)
        raise Ignore()  # (2)!
    return order.status


# --8<-- [end:reserve]


# --8<-- [start:charge]
def charge_key(order_id: int) -> str:
    """The idempotency key: the same for every attempt at charging this order."""
    return f"order-{order_id}-charge"


@shared_task(
    bind=True,
    autoretry_for=(requests.ConnectionError, requests.Timeout),  # (1)!
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=60,
    time_limit=90,
)
def charge_payment(self: Task, order_id: int) -> str:
    """RESERVED -> CHARGING -> PAID, charging the card at most once."""
    claimed = Order.objects.filter(pk=order_id, status=S.RESERVED).update(status=S.CHARGING)
    order = Order.objects.get(pk=order_id)
    if order.status != S.CHARGING:
        logger.info("order %s is %s: not charging", order_id, order.status)  # (2)!
        return order.status
    key = charge_key(order_id)
    charge_id = None if claimed else payments.find_charge(key)  # (3)!
    if charge_id is None:
        charge_id = payments.create_charge(key, order.amount_cents, f"order-{order_id}")  # (4)!
    Order.objects.filter(pk=order_id, status=S.CHARGING).update(status=S.PAID, payment_id=charge_id)
    logger.info("order %s paid: %s (attempt %s)", order_id, charge_id, self.request.retries + 1)
    return S.PAID


# --8<-- [end:charge]


# --8<-- [start:confirm]
@shared_task(
    bind=True,
    autoretry_for=(OSError,),  # (1)!
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
    soft_time_limit=30,
    time_limit=60,
)
def send_confirmation(self: Task, order_id: int) -> str:
    """PAID -> CONFIRMED in the transaction that sends the email: once, and only if paid."""
    with transaction.atomic():
        claimed = Order.objects.filter(pk=order_id, status=S.PAID).update(status=S.CONFIRMED)
        order = Order.objects.get(pk=order_id)
        if not claimed:
            logger.info("order %s is %s: no confirmation to send", order_id, order.status)
            return order.status
        send_mail(
            subject=f"Order {order_id} confirmed",
            message=f"{order.quantity} x {order.sku}, paid {order.amount_cents / 100:.2f} EUR.",
            from_email="orders@example.com",
            recipient_list=[order.email],
        )
    return S.CONFIRMED


# --8<-- [end:confirm]


# --8<-- [start:failure]
@shared_task(soft_time_limit=30, time_limit=60)
def handle_order_failure(order_id: int) -> str:
    """The workflow's link_error: leave the order in a final state, release its stock."""
    charge_id = None
    if Order.objects.filter(pk=order_id, status=S.CHARGING).exists():
        charge_id = payments.find_charge(charge_key(order_id))  # (1)!
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)  # (2)!
        if order.status == S.CHARGING and charge_id:
            order.status, order.payment_id = S.PAID, charge_id  # (3)!
            order.save(update_fields=["status", "payment_id"])
            send_confirmation.delay_on_commit(order_id)
            logger.warning("order %s: its charge %s went through after all", order_id, charge_id)
            return order.status
        if order.status in (S.PAID, S.CONFIRMED):
            logger.error("order %s is %s but a step failed: follow up", order_id, order.status)
            return order.status  # (4)!
        if order.status in (S.RESERVED, S.CHARGING):
            StockItem.objects.filter(sku=order.sku).update(
                available=F("available") + order.quantity
            )
        order.status = S.FAILED
        order.save(update_fields=["status"])
        notify_order_failed.delay_on_commit(order_id)
    logger.warning("order %s failed: stock released, customer told", order_id)
    return order.status


# --8<-- [end:failure]


# --8<-- [start:notify]
@shared_task(
    bind=True,
    autoretry_for=(OSError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
    soft_time_limit=30,
    time_limit=60,
)
def notify_order_failed(self: Task, order_id: int) -> str:
    """Tell the customer their order did not go through: once, whoever asks."""
    with transaction.atomic():
        claimed = Order.objects.filter(
            pk=order_id,
            status__in=[S.OUT_OF_STOCK, S.FAILED],
            customer_notified_at__isnull=True,
        ).update(customer_notified_at=timezone.now())
        if not claimed:
            if not Order.objects.filter(pk=order_id).exists():
                logger.warning("order %s does not exist: nobody to notify", order_id)
                return "no-such-order"
            return "already-notified"
        order = Order.objects.get(pk=order_id)
        why = "is out of stock" if order.status == S.OUT_OF_STOCK else "could not be charged"
        send_mail(
            subject=f"Order {order_id} not placed",
            message=f"Sorry: {order.sku} {why}. You have not been charged.",
            from_email="orders@example.com",
            recipient_list=[order.email],
        )
    return "notified"


# --8<-- [end:notify]


# --8<-- [start:sweeper]
from datetime import timedelta

UNFINISHED = [S.PENDING, S.RESERVED, S.CHARGING, S.PAID]


@shared_task(soft_time_limit=60, time_limit=90)
def resume_stuck_orders(older_than_seconds: int = 900) -> int:
    """Beat, every few minutes: start again the workflow of each order unfinished for long."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)  # (1)!
    stuck = list(
        Order.objects.filter(status__in=UNFINISHED, created_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    for order_id in stuck:
        logger.warning("order %s is still unfinished: starting its workflow again", order_id)
        order_workflow(order_id).delay()  # (2)!
    return len(stuck)


# --8<-- [end:sweeper]


# --8<-- [start:webhook]
import json
import re

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


def order_of(idempotency_key: str | None) -> int | None:
    """The order a charge was made for, read back from its idempotency key."""
    match = re.fullmatch(r"order-(\d+)-charge", idempotency_key or "")
    return int(match[1]) if match else None


@csrf_exempt  # (1)!
@require_POST
def payment_webhook(request: HttpRequest) -> HttpResponse:
    """The provider reports a charge: record it if we were still waiting, refund it if the
    order had already failed. Delivered twice, it changes nothing more."""
    signature = request.headers.get("Provider-Signature", "")
    if not payments.signature_is_valid(request.body, signature):
        return HttpResponse(status=400)  # (2)!
    event = json.loads(request.body)
    charge = event["data"]
    order_id = order_of(charge.get("idempotency_key"))
    if event["type"] != "charge.succeeded" or order_id is None:
        return HttpResponse(status=204)  # not an order's charge: acknowledged, nothing to do
    paid = Order.objects.filter(pk=order_id, status=S.CHARGING).update(
        status=S.PAID, payment_id=charge["id"]
    )  # (3)!
    if paid:
        send_confirmation.delay_on_commit(order_id)
    elif Order.objects.filter(pk=order_id, status=S.FAILED).exists():
        refund_charge.delay_on_commit(order_id, charge["id"])  # (4)!
    return HttpResponse(status=200)  # (5)!


@shared_task(
    autoretry_for=(requests.ConnectionError, requests.Timeout),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
    soft_time_limit=60,
    time_limit=90,
)
def refund_charge(order_id: int, charge_id: str) -> str:
    """Refund a charge that was booked after its order failed: once, however often asked."""
    refund_id = payments.refund_charge(f"order-{order_id}-refund", charge_id)  # (6)!
    logger.warning(
        "order %s: charge %s came after it failed, refunded: %s", order_id, charge_id, refund_id
    )
    return refund_id


# --8<-- [end:webhook]
