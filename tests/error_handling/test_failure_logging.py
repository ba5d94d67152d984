"""Proof for docs/error-handling/failure-logging.md: every failure is logged with its context."""

import logging
import uuid

import pytest
import requests
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure

from snippets.django_integration.models import Report
from snippets.django_integration.transactions import render_report
from snippets.error_handling.failure_logging import (
    charge_card,
    charge_card_redacted_by_caller,
    error_trackers,
    log_task_failure,
)
from tests.configuration.helpers import settings_env
from tests.error_handling.helpers import Reply, failure_records
from tests.harness.redelivery import redeliver

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ("task_id", "task_name", "task_args", "task_kwargs", "retries", "correlation_id")


def test_a_failing_task_is_logged_once_with_its_context(celery_worker, caplog):
    """a real failure produces exactly one record carrying every field, including the `x_request_id`
    header sent with the task."""
    caplog.set_level(logging.ERROR, logger="snippets.tasks")
    result = render_report.apply_async((424242,), headers={"x_request_id": "req-7f3a"})
    with pytest.raises(Report.DoesNotExist):
        result.get(timeout=20)

    [record] = failure_records(caplog, result.id)
    assert {f: getattr(record, f) for f in FIELDS} == {
        "task_id": result.id,
        "task_name": render_report.name,
        "task_args": "(424242,)",
        "task_kwargs": "{}",
        "retries": 0,
        "correlation_id": "req-7f3a",
    }
    assert "DoesNotExist" in record.getMessage()


def test_the_receiver_covers_every_task(celery_app):
    """Connected without a sender filter: no task can fail silently."""
    from celery.signals import task_failure
    from celery.utils.dispatch.signal import NONE_ID

    senders = [key[1] for (key, ref) in task_failure.receivers if ref() is log_task_failure]
    assert senders == [NONE_ID]  # connected once, for any sender (not for one task's name)


TOKEN = "tok_live_4242424242424242"  # a "secret" that must never reach a log record


def everything_logged(caplog) -> str:
    """Every record's message and attributes, as one string to search for the secret."""
    return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)


def test_a_secret_argument_never_appears_in_the_log(celery_worker, billing_api, caplog):
    """Redacted by the base task, on the first run and on the retry; retries so far = 1."""
    caplog.set_level(logging.DEBUG)
    billing_api.script = [Reply(503, create=False), Reply(402, create=False)]
    result = charge_card.apply_async(
        (1001,), {"card_token": TOKEN}, headers={"x_request_id": "req-card"}
    )
    with pytest.raises(requests.HTTPError, match="402"):
        result.get(timeout=30)

    [record] = failure_records(caplog, result.id)
    assert {f: getattr(record, f) for f in FIELDS} == {
        "task_id": result.id,
        "task_name": charge_card.name,
        "task_args": "(1001,)",
        "task_kwargs": "{'card_token': '***'}",
        "retries": 1,  # the failure came on the first retry
        "correlation_id": "req-card",  # the retry carried the request's id along
    }
    assert [r["body"]["card_token"] for r in billing_api.requests] == [TOKEN, TOKEN]  # sent...
    assert TOKEN not in everything_logged(caplog)  # ...and never logged, by us or by Celery


@pytest.mark.antipattern(task=charge_card_redacted_by_caller)
def test_a_failure_sent_without_the_tasks_request_falls_back_to_the_signals_arguments(caplog):
    """Annotation (2): for a hard time limit Celery 5.7.0 sends task_failure from the worker's
    main process without pushing the request (`Request.on_timeout`, celery/worker/request.py:574),
    so `sender.request` is empty. Sent here with the same arguments as that call: the record
    takes args and kwargs from the signal, the task's `secret_kwargs` redacted, and logs retries
    and the correlation id as None (unknown). A real time limit: docs/error-handling/timeouts.md.
    """
    caplog.set_level(logging.ERROR, logger="snippets.tasks")
    task_id = str(uuid.uuid4())
    assert charge_card.request.id is None  # no request pushed in this thread
    exc = TimeLimitExceeded(30)
    task_failure.send(
        sender=charge_card, task_id=task_id, exception=exc, args=[1004],
        kwargs={"card_token": TOKEN}, traceback=None, einfo=None,
    )  # fmt: skip

    [record] = failure_records(caplog, task_id)
    assert {f: getattr(record, f) for f in FIELDS} == {
        "task_id": task_id,
        "task_name": charge_card.name,
        "task_args": "(1004,)",
        "task_kwargs": "{'card_token': '***'}",
        "retries": None,
        "correlation_id": None,
    }
    assert TOKEN not in everything_logged(caplog)


def test_a_task_naming_no_secret_keeps_celerys_own_kwargsrepr(celery_app, monkeypatch, published):
    """The base task sets kwargsrepr only for a task that names secrets: with none, the message
    carries what Celery shows by itself (saferepr, cut at its 1024 characters), not a full repr
    of every keyword argument. Published to a queue no worker consumes, deleted after."""
    monkeypatch.setattr(charge_card, "secret_kwargs", ())
    kwargs = {"card_token": "x" * 2000}
    queue = f"fl-no-secret-{uuid.uuid4().hex[:8]}"
    try:
        result = charge_card.apply_async((1005,), kwargs, queue=queue)
        [sent] = [p for p in published if p["id"] == result.id]
        shown = sent["headers"]["kwargsrepr"]
        assert shown.startswith("{'card_token': 'xxx")
        assert len(shown) < 1100  # Celery's saferepr cut it; a full repr is 2000 characters
    finally:
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


def test_why_a_kwargsrepr_given_at_the_call_is_lost_on_retry(celery_worker, billing_api, caplog):
    """Celery 5.7.0: a retry is a new message built from the request, without the caller's
    kwargsrepr - so the failure after a retry logs the real token."""
    caplog.set_level(logging.ERROR, logger="snippets.tasks")
    billing_api.script = [Reply(402, create=False), Reply(503, create=False)]
    billing_api.script.append(Reply(402, create=False))

    first = charge_card_redacted_by_caller.apply_async(
        (1002,), {"card_token": TOKEN}, kwargsrepr="{'card_token': '***'}"
    )
    with pytest.raises(requests.HTTPError):
        first.get(timeout=30)  # no retry: redacted
    assert failure_records(caplog, first.id)[0].task_kwargs == "{'card_token': '***'}"

    retried = charge_card_redacted_by_caller.apply_async(
        (1003,), {"card_token": TOKEN}, kwargsrepr="{'card_token': '***'}"
    )
    with pytest.raises(requests.HTTPError):
        retried.get(timeout=30)  # 503, then 402 on the retry: the secret is in the log
    [record] = failure_records(caplog, retried.id)
    assert record.retries == 1
    assert TOKEN in record.task_kwargs
    assert TOKEN in everything_logged(caplog)


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.production.settings + BILLING_API_URL)",
    reason="the test's fake payment API in place of a real one",
)
@pytest.mark.proves_idempotent(task=charge_card)
def test_a_retried_charge_is_made_once(worker_process, billing_api):
    """The API charged but answered 502: the retry sends the same idempotency key. Delivered
    once more after it succeeded, on the same worker, it asks again with that key and the API
    charges nothing more (without the Idempotency-Key header it would create inv_2)."""
    wp = worker_process(
        env=settings_env("snippets.production.settings", BILLING_API_URL=billing_api.url)
    )
    billing_api.script = [Reply(502, create=True)]
    result = charge_card.apply_async((1004,), {"card_token": TOKEN}, queue=wp.queue)

    assert result.get(timeout=30) == "inv_1"
    assert [r["key"] for r in billing_api.requests] == ["charge-1004", "charge-1004"]
    again = redeliver(wp, charge_card, result, (1004,), {"card_token": TOKEN})
    assert (again["status"], again["result"]) == ("SUCCESS", "inv_1")
    assert [r["key"] for r in billing_api.requests] == ["charge-1004"] * 3
    assert billing_api.invoices == {"charge-1004": "inv_1"}  # one charge


def test_error_trackers_get_every_failure_and_a_broken_one_hides_nothing(
    celery_worker, billing_api, caplog
):
    """a tracker that raises is logged (with its traceback) and the next tracker still receives the
    exception and context."""
    caplog.set_level(logging.ERROR, logger="snippets.tasks")
    seen: list[tuple[BaseException | None, dict]] = []

    def broken(exception, context) -> None:
        raise RuntimeError("tracker down")

    error_trackers[:] = [broken, lambda exception, context: seen.append((exception, context))]
    try:
        billing_api.script = [Reply(402, create=False)]
        result = charge_card.apply_async((1005,), {"card_token": TOKEN})
        with pytest.raises(requests.HTTPError):
            result.get(timeout=30)
        failure, tracker_error = failure_records(caplog, result.id, at_least=2)
    finally:
        error_trackers.clear()

    [(exception, context)] = seen  # the second tracker still ran
    assert isinstance(exception, requests.HTTPError)
    assert context["task_id"] == result.id
    assert context["task_kwargs"] == "{'card_token': '***'}"
    assert "failed: HTTPError" in failure.getMessage()
    assert "error tracker" in tracker_error.getMessage()
    assert "tracker down" in tracker_error.exc_text
