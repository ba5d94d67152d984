"""ANTI-PATTERN: the order chain as it circulates; tests/recipes/test_order_workflow.py shows
each of its failures next to the pattern in order_workflow.py."""

# --8<-- [start:naive]
from celery import chain, shared_task
from django.core.mail import send_mail

from snippets.recipes import payments
from snippets.recipes.models import Order, StockItem


# The original calls methods on its Order model; here they are three functions.
def items_in_stock(order: Order) -> bool:
    return StockItem.objects.filter(sku=order.sku, available__gte=order.quantity).exists()


def charge(order: Order) -> None:
    order.payment_id = payments.create_charge(None, order.amount_cents, f"order-{order.pk}")
    order.save(update_fields=["payment_id"])


def send_confirmation_email(order: Order) -> None:
    send_mail(f"Order {order.pk} confirmed", "Thank you!", "orders@example.com", [order.email])


@shared_task
def validate_inventory(order_id: int) -> int:
    order = Order.objects.get(id=order_id)
    if not items_in_stock(order):
        raise ValueError("Items out of stock")
    return order_id


@shared_task
def charge_payment_naive(order_id: int) -> int:
    order = Order.objects.get(id=order_id)
    charge(order)
    return order_id


@shared_task
def send_confirmation_naive(order_id: int) -> None:
    send_confirmation_email(Order.objects.get(id=order_id))


def process_order(order_id: int) -> None:
    chain(
        validate_inventory.s(order_id),
        charge_payment_naive.s(),
        send_confirmation_naive.s(),
    ).delay()


# --8<-- [end:naive]
