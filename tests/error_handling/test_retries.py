"""Proof for docs/error-handling/retries.md: bounded, jittered retries of transient errors only."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from celery.signals import before_task_publish

from snippets.error_handling.models import Invoice
from snippets.error_handling.retries import (
    MAX_RETRY_AFTER,
    TransientAPIError,
    push_invoice,
    push_invoice_locked,
    push_invoice_retry_everything,
    push_invoice_retry_in_atomic,
    retry_after,
)
from tests.configuration.helpers import settings_env
from tests.error_handling.helpers import Reply, failure_records
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def retry_delays():
    """{(task id, retries): delay in seconds} of every retry this process publishes.

    The delay is read from the retry message itself (its ETA minus the moment it was sent),
    so nothing here waits for a retry to come due.
    """
    delays: dict[tuple[str, int], float] = {}

    def record(headers=None, **_kw) -> None:
        if headers.get("retries"):  # a countdown of 0 sends no ETA at all
            eta = headers.get("eta")
            delay = datetime.fromisoformat(eta).timestamp() - time.time() if eta else 0.0
            delays[(headers["id"], headers["retries"])] = delay

    before_task_publish.connect(record, weak=False)
    yield delays
    before_task_publish.disconnect(record)


def invoice(number: str = "F-1") -> Invoice:
    return Invoice.objects.create(number=number, amount_cents=12_300)


def pushes(published: list[dict], task=push_invoice) -> list[dict]:
    return [p for p in published if p["name"] == task.name]


@pytest.mark.parametrize("task", [push_invoice, push_invoice_locked], ids=["plain", "locked"])
def test_backoff_delays_grow_stay_under_the_cap_and_are_jittered(
    celery_worker, billing_api, retry_delays, task
):
    """The k-th retry waits a random 0..min(5 * 2**k, 300) s: growing, capped, spread out;
    the same for the push that holds the row lock (its options, jitter by default).

    A message published with retries=k is exactly what the (k+1)-th run receives, so each
    attempt number is sampled directly instead of waiting minutes for a chain to get there.
    """
    billing_api.always = Reply(503, create=False)
    samples = 4
    sent: dict[int, list[str]] = defaultdict(list)
    for k in range(8):  # max_retries=8: runs with retries 0..7 may still retry
        for i in range(samples):
            row = invoice(f"F-{k}-{i}")
            # expires: the retries left behind are dropped, not run against a stopped server
            result = task.apply_async((row.pk,), retries=k, expires=30)
            sent[k].append(result.id)

    def first_retries() -> dict[int, list[float]]:
        got = {k: [retry_delays.get((tid, k + 1)) for tid in ids] for k, ids in sent.items()}
        return got if all(d is not None for ds in got.values() for d in ds) else {}

    delays = wait_until(first_retries, timeout=90, what="a retry message for every attempt")
    bounds = {k: min(5 * 2**k, 300) for k in delays}
    assert bounds == {0: 5, 1: 10, 2: 20, 3: 40, 4: 80, 5: 160, 6: 300, 7: 300}
    for k, ds in delays.items():
        assert all(-1 < d <= bounds[k] + 1 for d in ds), (k, ds)  # never above the cap
    assert max(delays[0]) <= 6 < max(delays[7])  # the bound grows: 5 s, then up to 300 s
    for k in (5, 6, 7):  # jittered: the same attempt does not retry in lockstep
        assert max(delays[k]) - min(delays[k]) > 2, (k, delays[k])


def test_a_permanent_error_fails_at_once_without_a_retry(celery_worker, billing_api, published):
    """A `422` from the API: one message, one request, the error at once."""
    billing_api.script = [Reply(422, create=False)]
    result = push_invoice.delay(invoice().pk)

    with pytest.raises(requests.HTTPError, match="422"):
        result.get(timeout=30)
    assert len(billing_api.requests) == 1
    assert len(pushes(published)) == 1  # no retry message was published


def test_an_unknown_id_fails_at_once_without_a_retry(celery_worker, published):
    """A missing row: one message, no request, the error at once."""
    result = push_invoice.delay(987654)
    with pytest.raises(Invoice.DoesNotExist):
        result.get(timeout=30)
    assert len(pushes(published)) == 1


@pytest.mark.antipattern(task=push_invoice_retry_everything)
def test_why_retrying_every_exception_repeats_a_permanent_error(
    celery_worker, billing_api, published
):
    """autoretry_for=(Exception,): the same rejected request is sent 4 times, then fails."""
    billing_api.script = [Reply(422, create=False) for _ in range(4)]
    result = push_invoice_retry_everything.delay(invoice().pk)

    with pytest.raises(requests.HTTPError, match="422"):
        result.get(timeout=60)
    assert len(billing_api.requests) == 4  # 1 run + 3 useless retries of a 4xx
    assert len(pushes(published, push_invoice_retry_everything)) == 4


def test_after_max_retries_the_caller_sees_the_original_exception(
    celery_worker, billing_api, published, caplog
):
    """The 9th run (retries=8=max_retries) fails with the API's error, not MaxRetriesExceeded."""
    caplog.set_level(logging.ERROR, logger="snippets.tasks")
    billing_api.script = [Reply(503, create=False)]
    result = push_invoice.apply_async((invoice().pk,), retries=8)

    with pytest.raises(TransientAPIError, match="503 from the billing API"):
        result.get(timeout=30)
    assert len(pushes(published)) == 1  # no 10th run scheduled
    [record] = failure_records(caplog, result.id)  # logged once, as the final failure
    assert record.retries == 8


def test_a_rate_limited_call_is_retried_after_the_servers_retry_after(
    celery_worker, billing_api, retry_delays
):
    """`429` with `Retry-After: 1`: the retry message is due 1 s later, and the second call
    succeeds."""
    billing_api.script = [Reply(429, {"Retry-After": "1"}, create=False)]
    row = invoice()
    result = push_invoice.delay(row.pk)

    assert result.get(timeout=30) == "inv_1"
    assert round(retry_delays[(result.id, 1)]) == 1  # self.retry(countdown=Retry-After)
    assert len(billing_api.requests) == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 60), ("", 60), ("7", 7), (" 7 ", 7), ("86400", MAX_RETRY_AFTER), ("soon", 60)],
)
def test_retry_after_reads_seconds_and_is_capped(header, seconds):
    assert retry_after(header) == seconds


def test_retry_after_reads_an_http_date():
    """RFC 9110: Retry-After is delay-seconds or an HTTP-date; a past date means now."""
    in_two_minutes = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 110 <= retry_after(in_two_minutes) <= 120
    assert retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0
    assert retry_after("Sun, 06 Nov 2994 08:49:37 GMT") == MAX_RETRY_AFTER
    assert retry_after("Sun, 06 Nov 1994 08:49:37") == 0  # no zone: read as UTC


def test_a_rate_limit_given_as_a_date_is_retried_not_failed(
    celery_worker, billing_api, retry_delays
):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    billing_api.script = [Reply(429, {"Retry-After": when}, create=False)]
    result = push_invoice.delay(invoice().pk)

    assert result.get(timeout=30) == "inv_1"  # int(date) would have failed it for good
    assert 0 <= retry_delays[(result.id, 1)] <= 2.5
    assert len(billing_api.requests) == 2


def test_a_retry_after_a_lost_response_creates_one_invoice(celery_worker, billing_api, published):
    """The API created the invoice but the answer was a 502: the retry must not create another.

    Also covers a redelivery after success (acks_late): the task returns without a request.
    """
    billing_api.script = [Reply(502, create=True)]
    row = invoice()
    result = push_invoice.delay(row.pk)

    assert result.get(timeout=60) == "inv_1"
    assert len(billing_api.requests) == 2  # the first attempt and one retry...
    assert {r["key"] for r in billing_api.requests} == {f"invoice-{row.pk}"}  # ...same key
    assert billing_api.invoices == {f"invoice-{row.pk}": "inv_1"}  # one invoice at the API
    row.refresh_from_db()
    assert row.remote_id == "inv_1"

    again = push_invoice.delay(row.pk)  # a duplicate delivery of the same work
    assert again.get(timeout=30) == "inv_1"
    assert len(billing_api.requests) == 2  # answered from the row: no third request


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.production.settings + BILLING_API_URL)",
    reason="the test's fake billing API in place of a real one",
)
@pytest.mark.proves_idempotent(task=push_invoice)
def test_a_push_delivered_again_after_success_sends_nothing(worker_process, billing_api):
    """On a real worker: the same message again (a redelivery, the same id) after the invoice
    was pushed answers from the row: no second request, one invoice at the API. Without the
    `remote_id` check it would post again (and, without the key, create a second invoice)."""
    wp = worker_process(
        env=settings_env("snippets.production.settings", BILLING_API_URL=billing_api.url)
    )
    row = invoice()
    result = push_invoice.apply_async((row.pk,), queue=wp.queue)
    assert result.get(timeout=60) == "inv_1"

    again = redeliver(wp, push_invoice, result, (row.pk,))
    assert (again["status"], again["result"]) == ("SUCCESS", "inv_1")
    assert len(billing_api.requests) == 1
    assert billing_api.invoices == {f"invoice-{row.pk}": "inv_1"}
    row.refresh_from_db()
    assert row.remote_id == "inv_1"


@contextmanager
def row_at_each_retry(invoice_pk: int) -> Iterator[list[tuple[bool, bool]]]:
    """For each retry message, at the moment it is published: (is the publishing connection
    inside atomic()?, is the invoice row locked, seen from another connection with NOWAIT?)."""
    from django.db import OperationalError, connections, transaction

    seen: list[tuple[bool, bool]] = []

    def check(headers=None, **_kw) -> None:
        if not headers.get("retries"):
            return
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                table = Invoice._meta.db_table
                cursor.execute(
                    f"SELECT id FROM {table} WHERE id = %s FOR UPDATE NOWAIT", [invoice_pk]
                )
            locked = False
        except OperationalError:  # LockNotAvailable: another transaction holds the row
            locked = True
        finally:
            other.close()
        seen.append((transaction.get_connection().in_atomic_block, locked))

    before_task_publish.connect(check, weak=False)
    try:
        yield seen
    finally:
        before_task_publish.disconnect(check)


@pytest.mark.services("postgres")
def test_a_retry_is_sent_after_the_transaction_released_the_row(celery_worker, billing_api):
    """A 503 (autoretry_for) and a 429 (self.retry) under the row lock: each retry message is
    published after the transaction ended, with the row free; the third run pushes it."""
    billing_api.script = [
        Reply(503, create=False),
        Reply(429, {"Retry-After": "1"}, create=False),
    ]
    row = invoice()
    with row_at_each_retry(row.pk) as seen:
        assert push_invoice_locked.delay(row.pk).get(timeout=30) == "inv_1"
    assert seen == [(False, False), (False, False)]  # (in atomic, row locked), per retry
    assert len(billing_api.requests) == 3


@pytest.mark.services("postgres")
@pytest.mark.antipattern(task=push_invoice_retry_in_atomic)
def test_why_a_retry_inside_atomic_is_sent_while_the_row_is_locked(celery_worker, billing_api):
    """self.retry() inside atomic(): Task.retry publishes before it raises, so the retry is on
    the broker while the transaction is open and the row locked; the rollback comes after."""
    billing_api.script = [Reply(429, {"Retry-After": "1"}, create=False)]
    row = invoice()
    with row_at_each_retry(row.pk) as seen:
        assert push_invoice_retry_in_atomic.delay(row.pk).get(timeout=30) == "inv_1"
    assert seen == [(True, True)]


@pytest.mark.services("broker", "postgres")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.production.settings + BILLING_API_URL)",
    reason="the test's fake billing API in place of a real one",
)
@pytest.mark.proves_idempotent(task=push_invoice_locked)
def test_a_locked_push_delivered_again_after_success_sends_nothing(worker_process, billing_api):
    """On a real worker: the locked push delivered again (same id) reads the row under its lock
    and answers its remote id: no second request."""
    wp = worker_process(
        env=settings_env("snippets.production.settings", BILLING_API_URL=billing_api.url)
    )
    row = invoice()
    result = push_invoice_locked.apply_async((row.pk,), queue=wp.queue)
    assert result.get(timeout=60) == "inv_1"

    again = redeliver(wp, push_invoice_locked, result, (row.pk,))
    assert (again["status"], again["result"]) == ("SUCCESS", "inv_1")
    assert len(billing_api.requests) == 1
