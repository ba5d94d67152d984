"""Proof for docs/recipes/order-workflow.md: reserve, charge once, confirm, on a real worker."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import requests
from celery.exceptions import Ignore
from celery.utils.time import get_exponential_backoff_interval
from django.db import DatabaseError, connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from snippets.recipes import payments
from snippets.recipes.models import Order, StockItem
from snippets.recipes.order_workflow import (
    charge_key,
    charge_payment,
    handle_order_failure,
    notify_order_failed,
    order_workflow,
    place_order,
    refund_charge,
    reserve_stock,
    resume_stuck_orders,
    send_confirmation,
)
from snippets.recipes.order_workflow_naive import (
    charge_payment_naive,
    process_order,
    send_confirmation_naive,
    validate_inventory,
)
from snippets.recipes.payments import serve_provider
from tests.harness.db import Rollback
from tests.harness.net import free_port
from tests.harness.process import fresh_python
from tests.harness.publishes import recording_publishes
from tests.harness.redelivery import deliver_again, received
from tests.harness.wait import wait_until
from tests.recipes.helpers import (
    BAD_IDS,
    RECIPE_WORKER,
    coerces_to,
    recipe_worker_settings,
    run_web_process,
)

pytestmark = pytest.mark.django_db(transaction=True)

LOGGER = "snippets.recipes.order_workflow"


def status_becomes(order: Order, status: str, timeout: float = 60) -> Order:
    def check() -> Order | None:
        order.refresh_from_db()
        return order if order.status == status else None

    return wait_until(check, timeout=timeout, what=f"order {order.pk} {status}")


def names(published: list[dict]) -> list[str]:
    return [p["name"].rsplit(".", 1)[-1] for p in published]


def new_order(status: str = Order.Status.PENDING, sku: str = "LAMP", **kw) -> Order:
    fields = {"email": "ada@example.com", "sku": sku, "quantity": 1, "amount_cents": 4990}
    return Order.objects.create(status=status, **{**fields, **kw})


def stock(sku: str = "LAMP") -> int:
    return StockItem.objects.get(sku=sku).available


def test_an_order_is_reserved_charged_once_and_confirmed(
    celery_worker, provider, mailoutbox, published
):
    """stock 3 → 1, one charge with the order's key, one email, each step published once."""
    StockItem.objects.create(sku="LAMP", available=3)
    order = place_order("ada@example.com", "LAMP", 2, 4990)

    order = status_becomes(order, "confirmed")
    assert stock() == 1
    [charge] = provider.charges
    assert (charge["idempotency_key"], charge["amount"]) == (charge_key(order.pk), 4990)
    assert order.payment_id == charge["id"]
    [email] = mailoutbox
    assert email.to == ["ada@example.com"]
    assert names(published) == ["reserve_stock", "charge_payment", "send_confirmation"]


def test_a_rolled_back_order_starts_nothing(celery_worker, provider, published):
    """An order whose transaction rolls back publishes no workflow."""
    with pytest.raises(Rollback), transaction.atomic():
        place_order("ada@example.com", "LAMP", 1, 4990)
        raise Rollback
    assert published == []
    assert not Order.objects.exists()


WEB_PROCESS_BROKER_DOWN = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.ERROR, format="LOG %(name)s %(message)s")
from snippets.recipes.order_workflow import place_order

order = place_order("ada@example.com", "LAMP", 1, 4990)
print("pattern returned", order.pk, flush=True)
"""


@pytest.mark.services("broker")
def test_broker_down_at_commit_the_order_is_kept_pending():
    """The web process cannot reach the broker: the customer gets the order, the failure is
    logged, and the order waits PENDING for a re-publishing job (not a 500 after the commit)."""
    web = run_web_process(
        WEB_PROCESS_BROKER_DOWN, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert web.returncode == 0, web.stderr
    [order_id] = re.findall(r"pattern returned (\d+)", web.stdout)
    assert "LOG django.db.backends.base Error calling" in web.stdout
    assert Order.objects.get(pk=order_id).status == Order.Status.PENDING


@pytest.mark.proves_idempotent(task=resume_stuck_orders)
@pytest.mark.services("broker")
@RECIPE_WORKER
def test_the_sweeper_finishes_stuck_orders_and_a_redelivered_sweep_changes_nothing(
    worker_process, provider, settings
):
    """Orders left PENDING (broker down at commit), RESERVED (its charge message lost) and
    CHARGING (charged, then the worker died) an hour ago end CONFIRMED, each charged once; an
    order placed a moment ago is left to its own workflow. The same sweep delivered again finds
    nothing to do."""
    StockItem.objects.create(sku="LAMP", available=5)
    hour_ago = timezone.now() - timedelta(hours=1)
    pending = new_order(created_at=hour_ago)
    reserved = new_order(Order.Status.RESERVED, created_at=hour_ago)  # its unit already taken
    charging = new_order(Order.Status.CHARGING, created_at=hour_ago)
    charged = payments.create_charge(charge_key(charging.pk), 4990, "went through")
    fresh = new_order()  # its workflow may still be on its way: not the sweeper's business
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    env = recipe_worker_settings(queue, PAYMENTS_URL=settings.PAYMENTS_URL)
    wp = worker_process(queue=queue, env=env)

    sweep = resume_stuck_orders.apply_async((900,), queue=wp.queue)
    assert sweep.get(timeout=60) == 3
    for order in (pending, reserved, charging):
        status_becomes(order, Order.Status.CONFIRMED)
    assert charging.payment_id == charged  # found by its key, not charged again
    resume_stuck_orders.apply_async((900,), queue=wp.queue, task_id=sweep.id)  # redelivered
    done = f"{resume_stuck_orders.name}[{sweep.id}] succeeded in"
    wait_until(lambda: wp.log().count(done) == 2, what="the second delivery", context=wp)
    [first, second] = re.findall(re.escape(done) + r" [0-9.]+s: (\d+)", wp.log())
    assert (first, second) == ("3", "0")  # every order the first run found is finished
    assert len(provider.charges) == 3  # one per order
    assert stock() == 4  # only the PENDING order reserved a unit now
    fresh.refresh_from_db()
    assert fresh.status == Order.Status.PENDING


@pytest.mark.proves_idempotent(task=reserve_stock)
@pytest.mark.proves_idempotent(task=charge_payment)
@pytest.mark.proves_idempotent(task=send_confirmation)
@pytest.mark.proves_idempotent(task=handle_order_failure)
@pytest.mark.proves_idempotent(task=notify_order_failed)
@pytest.mark.services("broker")
@RECIPE_WORKER
def test_every_step_delivered_again_changes_nothing(
    worker_process, provider, smtp_server, settings
):
    """Two orders run their workflows on a worker subprocess: one is confirmed, the other's card
    is declined (the error callback gives its unit back and tells the customer). Then every
    message the two ran is delivered again with its task id, as the broker does after a lost
    acknowledgement: each step finds the order's state already advanced, and the stock, the
    charges, the emails and the orders stay as the first deliveries left them."""
    # Each step fails this if it acts without checking the state first: a second reservation
    # takes a unit (stock 3), a second claim of the charge overwrites CONFIRMED with PAID, a
    # second release gives a unit back (stock 5), a second confirmation or notice is an email.
    provider.decline_over = 5000
    StockItem.objects.create(sku="LAMP", available=5)
    paid = new_order(amount_cents=4990)
    declined = new_order(amount_cents=9990, email="bob@example.com")
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    env = recipe_worker_settings(queue, smtp_server, PAYMENTS_URL=settings.PAYMENTS_URL)
    wp = worker_process(queue=queue, env=env)

    confirm = order_workflow(paid.pk).apply_async(queue=wp.queue)  # the chain's last step
    never_sent = order_workflow(declined.pk).apply_async(queue=wp.queue)
    status_becomes(paid, Order.Status.CONFIRMED)
    status_becomes(declined, Order.Status.FAILED)
    [failure] = wait_until(lambda: received(wp, handle_order_failure), what="the error callback")
    [notice] = wait_until(lambda: received(wp, notify_order_failed), what="the notice")
    assert notify_order_failed.AsyncResult(notice).get(timeout=30) == "notified"
    assert (stock(), len(provider.charges), len(smtp_server.messages)) == (4, 1, 2)

    again = [
        (reserve_stock, paid, confirm.parent.parent.id, "confirmed"),
        (charge_payment, paid, confirm.parent.id, "confirmed"),
        (send_confirmation, paid, confirm.id, "confirmed"),
        (reserve_stock, declined, never_sent.parent.parent.id, "failed"),
        (charge_payment, declined, never_sent.parent.id, "failed"),
        (handle_order_failure, declined, failure, "failed"),
        (notify_order_failed, declined, notice, "already-notified"),
    ]
    for task, order, task_id, answer in again:
        assert deliver_again(wp, task, (order.pk,), task_id) == answer, task.name
    # The failure handler publishes the notice again (the first could have been lost): a new
    # message, which finds the customer told.
    [asked_again] = wait_until(
        lambda: sorted(set(received(wp, notify_order_failed)) - {notice}), what="a new notice"
    )
    assert notify_order_failed.AsyncResult(asked_again).get(timeout=30) == "already-notified"

    assert (stock(), len(provider.charges), len(smtp_server.messages)) == (4, 1, 2)
    mails = [m["data"] for m in smtp_server.messages]
    assert sum(f"Subject: Order {paid.pk} confirmed" in m for m in mails) == 1
    assert sum(f"Subject: Order {declined.pk} not placed" in m for m in mails) == 1
    paid.refresh_from_db()
    declined.refresh_from_db()
    assert (paid.status, paid.payment_id, declined.status) == ("confirmed", "ch_1", "failed")


@pytest.mark.antipattern(task=validate_inventory)
def test_why_naive_chain_starts_before_commit(celery_worker, provider, published):
    """The naive chain is published inside the transaction, before the order is committed."""
    with pytest.raises(Rollback), transaction.atomic():
        order = new_order()
        process_order(order.pk)
        raise Rollback
    [sent] = published  # the chain left before the rollback
    with pytest.raises(Order.DoesNotExist):
        reserve_stock.AsyncResult(sent["id"]).get(timeout=30)


def test_charge_delivered_twice_charges_once(celery_worker, provider, caplog):
    """The same charge message delivered twice (same task id): the card is charged once."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    order = new_order(status=Order.Status.RESERVED)
    first = charge_payment.delay(order.pk)
    assert first.get(timeout=30) == "paid"
    charge_payment.apply_async((order.pk,), task_id=first.id)  # the redelivery
    wait_until(
        lambda: [r for r in caplog.records if "not charging" in r.getMessage()],
        what="the second delivery ran",
    )

    assert len(provider.charges) == 1
    order.refresh_from_db()
    assert (order.status, order.payment_id) == ("paid", "ch_1")


@pytest.mark.antipattern(task=charge_payment_naive)
def test_why_naive_charge_delivered_twice_charges_twice(celery_worker, provider):
    """The naive charge delivered twice charges the card twice."""
    order = new_order(status=Order.Status.RESERVED)
    first = charge_payment_naive.delay(order.pk)
    first.get(timeout=30)
    charge_payment_naive.apply_async((order.pk,), task_id=first.id)  # the redelivery

    wait_until(lambda: len(provider.charges) == 2, what="the second charge")
    assert [c["idempotency_key"] for c in provider.charges] == [None, None]


def test_a_timeout_after_the_charge_went_through_is_not_charged_again(
    celery_worker, provider, settings, published, caplog
):
    """The provider books the charge, then answers after the client's timeout: the retry
    asks the provider, finds the charge, does not charge again, and logs that the second
    attempt paid."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    settings.PAYMENTS_TIMEOUT = 0.5
    provider.response_delay = 1.5
    order = new_order(status=Order.Status.RESERVED)

    result = charge_payment.delay(order.pk)
    status_becomes(order, "paid")

    assert len(provider.charges) == 1
    assert provider.lookups == 1  # asked before charging again
    assert [p["headers"]["retries"] for p in published] == [0, 1]
    assert order.payment_id == "ch_1"
    assert result.id == published[1]["id"]  # a retry keeps the task id
    [paid] = wait_until(
        lambda: [r.getMessage() for r in caplog.records if " paid: " in r.getMessage()],
        what="the charge's log line",
    )
    assert paid == f"order {order.pk} paid: ch_1 (attempt 2)"


@pytest.mark.services("postgres")  # row locks: SQLite locks the whole file instead
def test_two_orders_racing_for_the_last_item(celery_worker, mailoutbox, published, caplog):
    """Two reservations at the same moment (two threads, two connections): one reserves,
    the other is OUT_OF_STOCK, told by email, with no failure logged and no charge sent."""
    caplog.set_level(logging.INFO)
    StockItem.objects.create(sku="LAMP", available=1)
    orders = [new_order(email=f"{n}@example.com") for n in ("ann", "bob")]
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def reserve(order: Order) -> None:
        barrier.wait()
        try:
            outcomes[order.pk] = reserve_stock.run(order.pk)
        except Ignore:
            outcomes[order.pk] = "ignored"
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reserve, args=(o,)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sorted(outcomes.values()) == ["ignored", "reserved"]
    assert stock() == 0
    loser = next(o for o in orders if outcomes[o.pk] == "ignored")
    assert Order.objects.get(pk=loser.pk).status == "out_of_stock"
    wait_until(lambda: len(mailoutbox) == 1, what="the out-of-stock email")
    assert "out of stock" in mailoutbox[0].body
    assert mailoutbox[0].to == [loser.email]
    assert names(published) == ["notify_order_failed"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_out_of_stock_ends_the_workflow_quietly(celery_worker, provider, published, caplog):
    """Out of stock: the order is marked failed and the workflow stops, with no traceback."""
    caplog.set_level(logging.INFO)
    StockItem.objects.create(sku="LAMP", available=0)
    order = place_order("bob@example.com", "LAMP", 1, 4990)

    status_becomes(order, "out_of_stock")
    wait_until(lambda: "notify_order_failed" in names(published), what="the customer told")
    time.sleep(1)
    assert "charge_payment" not in names(published)  # Ignore stopped the chain
    assert provider.charges == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


@pytest.mark.antipattern(task=validate_inventory)
def test_why_naive_out_of_stock_is_a_traceback_and_a_limbo(celery_worker, provider, caplog):
    """The naive chain raises on out of stock and leaves the order in limbo."""
    caplog.set_level(logging.INFO)
    StockItem.objects.create(sku="LAMP", available=0)
    order = new_order()
    process_order(order.pk)

    errors = wait_until(
        lambda: [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info],
        what="the traceback",
    )
    assert "Items out of stock" in str(errors[0].exc_info[1])  # a traceback, for a business outcome
    order.refresh_from_db()
    assert order.status == "pending"  # and the order stays in limbo: nobody is told


@pytest.mark.antipattern(task=send_confirmation_naive)
def test_why_naive_check_without_reserving_oversells(celery_worker, provider, mailoutbox):
    """Both orders pass the stock check for the last item: both are charged and confirmed."""
    StockItem.objects.create(sku="LAMP", available=1)
    for email in ("ann@example.com", "bob@example.com"):
        process_order(new_order(email=email).pk)

    wait_until(lambda: len(mailoutbox) == 2, what="two confirmations")
    assert len(provider.charges) == 2
    assert stock() == 1  # nothing was ever reserved


def test_a_failed_confirmation_is_retried_never_recharged(
    celery_worker, provider, smtp_server, published
):
    """The SMTP server says "421 try again": the order stays PAID, only the confirmation is
    retried, the card is charged once. A second delivery of the confirmation sends nothing."""
    smtp_server.busy_connections = 1
    StockItem.objects.create(sku="LAMP", available=1)
    order = place_order("ada@example.com", "LAMP", 1, 4990)

    status_becomes(order, "confirmed")
    assert len(provider.charges) == 1
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 2  # refused once, then delivered
    confirmations = [p for p in published if p["name"] == send_confirmation.name]
    assert [p["headers"]["retries"] for p in confirmations] == [0, 1]  # retried on its own
    assert send_confirmation.delay(order.pk).get(timeout=30) == "confirmed"  # delivered again
    assert len(smtp_server.messages) == 1


def test_a_declined_card_releases_the_stock_and_tells_the_customer(
    celery_worker, provider, mailoutbox, published
):
    """A declined card: the charge fails at once with PaymentDeclined (a business outcome, not
    retried), and the error callback releases the stock and tells the customer once."""
    provider.decline_over = 1000
    StockItem.objects.create(sku="LAMP", available=1)
    order = place_order("ada@example.com", "LAMP", 1, 4990)

    status_becomes(order, "failed")
    [charge] = [p for p in published if p["name"] == charge_payment.name]  # not retried
    with pytest.raises(payments.PaymentDeclined, match=f"^order-{order.pk}: card_declined$"):
        charge_payment.AsyncResult(charge["id"]).get(timeout=30)
    assert stock() == 1  # released
    wait_until(lambda: len(mailoutbox) == 1, what="the email")
    assert "could not be charged" in mailoutbox[0].body
    assert provider.charges == []
    assert "send_confirmation" not in names(published)


def test_the_failure_handler_finds_a_charge_that_went_through(celery_worker, provider, mailoutbox):
    """Charging ran out of retries, but the provider has the charge: PAID, then confirmed."""
    order = new_order(status=Order.Status.CHARGING)
    provider.charges.append({"id": "ch_9", "idempotency_key": charge_key(order.pk)})

    assert handle_order_failure.delay(order.pk).get(timeout=30) == "paid"
    status_becomes(order, "confirmed")
    assert order.payment_id == "ch_9"
    assert len(mailoutbox) == 1


class SlowLookups(payments.FakeProvider):
    """The provider during an incident: the first `slow` lookups answer after `delay` s too.
    `asked` counts lookups as they arrive (`lookups` only once answered)."""

    slow: int = 1
    delay: float = 1.5
    asked: int = 0

    def find(self, key: str) -> tuple[int, dict]:
        with self.lock:
            self.asked += 1
            slow, self.slow = self.slow > 0, self.slow - 1
        if slow:
            time.sleep(self.delay)
        return super().find(key)


@pytest.mark.services("broker")
@RECIPE_WORKER
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE also sets PAYMENTS_TIMEOUT=0.5 and charge_payment max_retries=1",
    reason="the provider's answers come after the timeout; one retry instead of five (a "
    "minute of backoff) to run out of retries",
)
def test_a_charge_out_of_retries_on_a_worker_is_found_by_the_failure_handler(worker_process):
    """On a real worker: the charge is booked but answers too late, the retry's lookup is too
    late as well, the retries run out, and the chain's error callback (on the worker) asks
    the provider again, finds the charge: PAID and confirmed, charged once, not failed."""
    provider = SlowLookups(response_delay=1.5)  # every charge answer comes after the timeout
    server = serve_provider(provider)
    StockItem.objects.create(sku="LAMP", available=1)
    order = new_order()
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    env = recipe_worker_settings(
        queue,
        PAYMENTS_URL=f"http://127.0.0.1:{server.server_port}",
        PAYMENTS_TIMEOUT=0.5,
        CELERY_TASK_ANNOTATIONS={charge_payment.name: {"max_retries": 1}},
    )
    try:
        wp = worker_process(queue=queue, env=env)
        order_workflow(order.pk).apply_async(queue=wp.queue)

        status_becomes(order, Order.Status.CONFIRMED)
        log = wp.log()
        charge = re.escape(charge_payment.name) + r"\[[-\w]+\] "
        assert len(re.findall(charge + "retry: Retry in", log)) == 1  # retried once
        assert re.search(charge + "raised unexpected: ReadTimeout", log)  # then out of retries
        assert f"order {order.pk}: its charge ch_1 went through after all" in log  # the handler
        assert order.payment_id == "ch_1"
        assert len(provider.charges) == 1
        assert provider.asked == 2  # the retry's lookup (too late), the handler's
        assert stock() == 0  # the paid order keeps its unit
    finally:
        server.shutdown()
        server.server_close()


def test_the_failure_handler_never_fails_a_paid_order(celery_worker, caplog):
    """The failure handler leaves a paid order paid, and logs an error that says so."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    order = new_order(status=Order.Status.PAID)

    assert handle_order_failure.delay(order.pk).get(timeout=30) == "paid"
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"order {order.pk} is paid" in record.getMessage()


def test_a_redelivered_reservation_reserves_once(celery_worker):
    """A reservation delivered twice reserves the stock once."""
    StockItem.objects.create(sku="LAMP", available=5)
    order = new_order(quantity=2)
    first = reserve_stock.delay(order.pk)
    assert first.get(timeout=30) == "reserved"
    assert reserve_stock.delay(order.pk).get(timeout=30) == "reserved"
    assert stock() == 3


def test_the_customer_is_told_once(celery_worker, mailoutbox):
    """The failure notice sent twice tells the customer once."""
    order = new_order(status=Order.Status.FAILED)
    first = notify_order_failed.delay(order.pk)
    assert first.get(timeout=30) == "notified"
    assert notify_order_failed.delay(order.pk).get(timeout=30) == "already-notified"
    assert len(mailoutbox) == 1


@dataclass
class ProbesTheRowLock(payments.FakeProvider):
    """The provider, which, while it handles each request, has another connection try to lock
    the order's row (``SELECT ... FOR UPDATE NOWAIT``): "free" or "locked", per request."""

    order_id: int = 0
    probes: list[str] = field(default_factory=list)

    def probe(self) -> None:
        try:
            with transaction.atomic():
                Order.objects.select_for_update(nowait=True).get(pk=self.order_id)
            self.probes.append("free")
        except DatabaseError:
            self.probes.append("locked")
        finally:
            connections.close_all()  # this request's thread is done with its connection

    def charge(self, key: str | None, body: dict) -> tuple[int, dict]:
        self.probe()
        return super().charge(key, body)

    def find(self, key: str) -> tuple[int, dict]:
        self.probe()
        return super().find(key)


@pytest.mark.services("postgres")  # NOWAIT row locks: SQLite has no SELECT ... FOR UPDATE
def test_no_row_lock_is_held_while_the_provider_is_called(celery_worker, settings):
    """A declined card: the charge, then the error callback's lookup of the charge by key. While
    the provider handles each request, another connection locks the order's row with NOWAIT and
    gets it: no step holds the row while it waits on the network."""
    StockItem.objects.create(sku="LAMP", available=1)
    order = new_order()
    provider = ProbesTheRowLock(decline_over=1000, order_id=order.pk)
    server = serve_provider(provider)
    settings.PAYMENTS_URL = f"http://127.0.0.1:{server.server_port}"
    try:
        order_workflow(order.pk).delay()
        status_becomes(order, Order.Status.FAILED)
    finally:
        server.shutdown()
        server.server_close()
    assert provider.lookups == 1  # the error callback asked the provider
    assert provider.probes == ["free", "free"]  # during the charge, during the lookup
    assert stock() == 1


WEBHOOK_SECRET = "whsec_test"


@pytest.fixture
def webhook(client, settings, provider):
    """POST the provider's signed event for `charge` to the shop's webhook, as the provider
    does; `signature=` sends another signature instead."""
    settings.ROOT_URLCONF = "snippets.recipes.urls"
    settings.PAYMENTS_WEBHOOK_SECRET = WEBHOOK_SECRET

    def post(charge: dict, event_type: str = "charge.succeeded", signature: str | None = None):
        body, signed = provider.webhook(event_type, charge, WEBHOOK_SECRET)
        return client.post(
            "/payments/webhook",
            body,
            content_type="application/json",
            headers={"Provider-Signature": signed if signature is None else signature},
        )

    return post


def test_a_charge_booked_after_the_order_failed_is_refunded_once(
    celery_worker, provider, webhook, published
):
    """The client gave up, the order failed, the customer was told "not charged": then the
    request still in flight books the charge. The provider's webhook, delivered twice, refunds
    it once. A forged event (bad signature) and an event for no order's charge change nothing."""
    order = new_order(status=Order.Status.FAILED)
    late = payments.create_charge(charge_key(order.pk), 4990, "in flight")  # booked too late
    [charge] = provider.charges

    assert webhook(charge, signature="0" * 64).status_code == 400  # not from the provider
    assert webhook({**charge, "idempotency_key": "not-an-order"}).status_code == 204
    assert published == []
    for _delivery in range(2):  # the provider delivers at least once
        assert webhook(charge).status_code == 200
    refunds = [p for p in published if p["name"] == refund_charge.name]
    assert [p["args"] for p in refunds] == [[order.pk, late], [order.pk, late]]
    for p in refunds:
        assert refund_charge.AsyncResult(p["id"]).get(timeout=30) == "re_1"
    assert [r["charge"] for r in provider.refunds] == [late]  # one refund, of that charge
    order.refresh_from_db()
    assert order.status == Order.Status.FAILED


def test_the_webhook_records_a_charge_the_workflow_is_still_waiting_for(
    celery_worker, provider, webhook, mailoutbox, published
):
    """The order is CHARGING (the charge step is retrying, or its worker died): the webhook
    records the charge and the confirmation follows, once, however often it is delivered."""
    order = new_order(status=Order.Status.CHARGING)
    payments.create_charge(charge_key(order.pk), 4990, "booked")
    [charge] = provider.charges

    assert webhook(charge).status_code == 200
    status_becomes(order, Order.Status.CONFIRMED)
    assert webhook(charge).status_code == 200  # delivered again: the order is past CHARGING
    assert names(published) == ["send_confirmation"]
    assert order.payment_id == charge["id"]
    assert len(mailoutbox) == 1


@pytest.mark.proves_idempotent(task=refund_charge)
@pytest.mark.services("broker")
@RECIPE_WORKER
def test_a_refund_delivered_again_refunds_nothing_more(worker_process, provider, settings):
    """On a worker subprocess: the refund runs, then its message is delivered again with its
    task id. The provider answers the second request with the first refund (the refund's own
    idempotency key): one refund."""
    order = new_order(status=Order.Status.FAILED)
    late = payments.create_charge(charge_key(order.pk), 4990, "in flight")
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    wp = worker_process(
        queue=queue, env=recipe_worker_settings(queue, PAYMENTS_URL=settings.PAYMENTS_URL)
    )

    first = refund_charge.apply_async((order.pk, late), queue=wp.queue)
    assert first.get(timeout=60) == "re_1"
    assert deliver_again(wp, refund_charge, (order.pk, late), first.id) == "re_1"
    assert len(provider.refunds) == 1


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
def test_the_provider_answers_a_repeated_key_with_the_first_charge(provider, settings):
    """What the idempotency key buys: two requests racing past our own checks still make
    one charge, and one refund per refund key. (The stand-in's semantics, as real providers
    document them.) It answers at once unless a test makes it answer late."""
    from snippets.recipes.payments import create_charge, refund_charge

    settings.PAYMENTS_TIMEOUT = 0.5  # as the proofs that make it late set it
    first = create_charge("order-1-charge", 4990, "order-1")
    assert create_charge("order-1-charge", 4990, "order-1") == first
    assert len(provider.charges) == 1
    other = create_charge(None, 4990, "order-1")
    assert other != first  # no key: a new charge every time
    refund = refund_charge("order-1-refund", first)
    assert refund_charge("order-1-refund", first) == refund
    assert refund_charge("order-2-refund", other) != refund  # another key: its own refund
    assert [r["charge"] for r in provider.refunds] == [first, other]


STAND_IN_LEFT_RUNNING = """
import requests
from snippets.recipes.payments import FakeProvider, serve_provider

server = serve_provider(FakeProvider(response_delay=120))  # never shut down
try:
    requests.post(f"http://127.0.0.1:{server.server_port}/charges", json={"amount": 1}, timeout=1)
except requests.Timeout:
    print("gave up, the answer still on its way", flush=True)
"""


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
def test_the_stand_in_provider_never_keeps_its_process_alive():
    """serve_provider() serves from daemon threads: a process that never shuts it down, with
    an answer still on its way, ends with its code (a proof that fails does not also hang)."""
    done = fresh_python(STAND_IN_LEFT_RUNNING, {"PATH": os.environ["PATH"]}, timeout=30)
    assert (done.returncode, done.stdout) == (0, "gave up, the answer still on its way\n"), (
        done.stderr
    )


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
def test_each_task_has_its_own_finite_limits_below_the_projects_default(celery_app):
    """Every step's limits are its own: soft before hard, both set on the task itself and
    below the project's default budget (the proofs run in seconds, far from either limit)."""
    tasks = (
        reserve_stock,
        charge_payment,
        send_confirmation,
        handle_order_failure,
        notify_order_failed,
        resume_stuck_orders,
        refund_charge,
    )
    for task in tasks:
        assert 0 < task.soft_time_limit < task.time_limit < celery_app.conf.task_time_limit, (
            task.name
        )


# Each retrying task: what it retries (only what may have failed in transit), and its
# countdowns at worst, as autoretry computes them with these options but without the jitter.
RETRIES = {
    charge_payment: ((requests.ConnectionError, requests.Timeout), [2, 4, 8, 16, 32]),
    send_confirmation: ((OSError,), [2, 4, 8, 16, 32, 64, 120, 120]),
    notify_order_failed: ((OSError,), [2, 4, 8, 16, 32, 64, 120, 120]),
    refund_charge: ((requests.ConnectionError, requests.Timeout), [2, 4, 8, 16, 32, 60, 60, 60]),
}


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
def test_the_retry_policies_are_jittered_capped_and_finite():
    """autoretry computes each countdown with get_exponential_backoff_interval and the task's
    options: full jitter spreads the retries of many orders; the cap bounds the longest wait;
    the retries run out (the charge's then reach the error callback)."""
    for task, (transient, worst) in RETRIES.items():
        assert (task.autoretry_for, task.retry_jitter) == (transient, True), task.name
        countdowns = [
            get_exponential_backoff_interval(task.retry_backoff, n, task.retry_backoff_max, False)
            for n in range(task.max_retries)
        ]
        assert countdowns == worst, task.name
        samples = {
            get_exponential_backoff_interval(
                task.retry_backoff, 4, task.retry_backoff_max, task.retry_jitter
            )
            for _ in range(300)
        }
        assert len(samples) > 10, task.name  # spread, not one synchronized wave


# Property-based: order ids the outside world controls (BAD_IDS), sent to every step.
STEPS = {
    t.name.rsplit(".", 1)[-1]: t
    for t in (
        reserve_stock,
        charge_payment,
        send_confirmation,
        handle_order_failure,
        notify_order_failed,
    )
}


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(step=st.sampled_from(sorted(STEPS)), bad_id=BAD_IDS)
@example(step="notify_order_failed", bad_id=10**9)
@example(step="charge_payment", bad_id=2**63)
@example(step="reserve_stock", bad_id="abc")
def test_property_a_bad_order_id_fails_once_with_context_and_touches_nothing(
    celery_worker, caplog, step, bad_id
):
    """Hypothesis, 30 generated cases: unknown, negative, out-of-range and non-integer ids (text,
    floats, lists, `null`) sent to each step: no retry, the failure logged with the task, its id and
    its arguments (or, for the notification, a warning that the order does not exist), and a valid
    order is still reserved, once, by the same worker."""
    Order.objects.all().delete()
    StockItem.objects.all().delete()
    StockItem.objects.create(sku="LAMP", available=3)
    order = new_order()
    assume(not coerces_to(bad_id, order.pk))
    caplog.clear()
    caplog.set_level(logging.INFO)
    task = STEPS[step]

    with recording_publishes() as published:
        result = task.delay(bad_id)
        with contextlib.suppress(Exception):
            result.get(timeout=30)
        assert reserve_stock.delay(order.pk).get(timeout=30) == "reserved"  # the worker lives

    assert [p["name"] for p in published] == [task.name, reserve_stock.name]  # no retry
    if result.state == "SUCCESS":  # a step that checks, and says so
        assert result.result == "no-such-order"
        [record] = [r for r in caplog.records if r.name == LOGGER and "does not exist" in r.msg]
        assert record.levelno == logging.WARNING
    else:  # an id that matches no order, or is no id: the failure logger has the context
        assert result.state == "FAILURE"
        [record] = [r for r in caplog.records if getattr(r, "task_id", None) == result.id]
        assert (record.name, record.levelno, record.task_name) == (
            "snippets.tasks",
            logging.ERROR,
            task.name,
        )
        assert record.task_args.startswith("(")  # the bad id itself, as Celery shows it
    order.refresh_from_db()
    assert (order.status, stock()) == ("reserved", 2)  # the valid order, and only it
