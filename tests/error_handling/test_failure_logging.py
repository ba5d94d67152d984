"""Proof for docs/error-handling/failure-logging.md: every failure is logged with its context."""

import logging

import pytest

from snippets.django_integration.models import Report
from snippets.django_integration.transactions import render_report
from snippets.error_handling.failure_logging import log_task_failure

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ("task_id", "task_name", "task_args", "task_kwargs", "retries", "correlation_id")


def failure_records(caplog, task_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "snippets.tasks" and r.task_id == task_id]


def test_a_failing_task_is_logged_once_with_its_context(celery_worker, caplog):
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

    receivers = [ref() for (_key, ref) in task_failure.receivers]
    assert log_task_failure in receivers
    assert task_failure.receivers[receivers.index(log_task_failure)][0][1] is not None
