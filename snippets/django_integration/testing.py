"""Testing Celery code in a Django project: the tests a reader writes, and the ones to avoid.

The functions named ``test_*`` are real pytest tests: tests/django_integration/test_testing.py
imports them, so they run in this site's suite exactly as shown on the page.
"""

# --8<-- [start:unit]
from snippets.django_integration.models import Report
from snippets.django_integration.transactions import render_report


def test_render_report_renders_once(db: None) -> None:
    """Unit test: call the task like a function. No broker, no worker, plain `db` is enough."""
    report = Report.objects.create(title="unit")
    assert render_report(report.pk) == "unit"  # (1)!
    report.refresh_from_db()
    assert report.render_count == 1


# --8<-- [end:unit]


# --8<-- [start:on_commit]
from collections.abc import Callable
from contextlib import AbstractContextManager

from celery.signals import before_task_publish

from snippets.django_integration.transactions import create_report

CaptureOnCommit = Callable[..., AbstractContextManager[list[Callable[[], object]]]]


def test_create_report_enqueues_one_render_on_commit(
    db: None, django_capture_on_commit_callbacks: CaptureOnCommit
) -> None:
    """What is published, and when: nothing inside the block, one render of the new id at commit."""
    published: list[tuple[str, list[object]]] = []

    def record(sender: str, body: tuple, **_: object) -> None:  # (1)!
        published.append((sender, list(body[0])))

    before_task_publish.connect(record)
    try:
        with django_capture_on_commit_callbacks(execute=True):  # (2)!
            report = create_report("captured")
            assert published == []  # not before the commit
    finally:
        before_task_publish.disconnect(record)
    assert published == [(render_report.name, [report.pk])]


# --8<-- [end:on_commit]


# --8<-- [start:retries]
from unittest import mock

import pytest
from celery.exceptions import Retry

from snippets.error_handling import retries
from snippets.error_handling.models import Invoice
from snippets.error_handling.retries import RateLimited, TransientAPIError, push_invoice


def test_a_rate_limited_push_asks_to_retry_after_the_servers_delay(db: None) -> None:
    """A bound task: patch what it calls and its `retry`, then call it like a function."""
    invoice = Invoice.objects.create(number="T-1", amount_cents=100)
    with (
        mock.patch.object(retries, "post_invoice", side_effect=RateLimited(30)),
        mock.patch.object(push_invoice, "retry", side_effect=Retry) as retry,  # (1)!
        pytest.raises(Retry),
    ):
        push_invoice(invoice.pk)  # (2)!
    assert retry.call_args.kwargs["countdown"] == 30


def test_a_transient_error_is_retried_until_it_succeeds(db: None) -> None:
    """`apply()` runs the task with its retries, inline: every attempt, no countdown waited."""
    invoice = Invoice.objects.create(number="T-2", amount_cents=100)
    outcomes = [TransientAPIError("503"), TransientAPIError("503"), "inv-42"]
    with mock.patch.object(retries, "post_invoice", side_effect=outcomes) as post:
        result = push_invoice.apply((invoice.pk,))  # (3)!
    assert result.get() == "inv-42"
    assert post.call_count == 3  # two retries (autoretry_for), then success
    invoice.refresh_from_db()
    assert invoice.remote_id == "inv-42"


# --8<-- [end:retries]


# --8<-- [start:fixture]
from collections.abc import Iterator

from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController
from pytest_django import DjangoDbBlocker

from snippets.project.celery import app


@pytest.fixture(scope="session")
def project_worker(
    django_db_setup: None, django_db_blocker: DjangoDbBlocker
) -> Iterator[WorkController]:
    """A real worker in a thread on the project's own app, broker and settings, for the session.

    Not named `celery_worker`: that is celery.contrib.pytest's fixture, on a test app."""
    import celery.contrib.testing.tasks  # noqa: F401  celery.ping, for start_worker's check

    with (
        django_db_blocker.unblock(),  # (1)!
        start_worker(app, pool="solo", shutdown_timeout=30) as worker,  # (2)!
    ):
        yield worker


# --8<-- [end:fixture]


# --8<-- [start:integration]
def test_a_real_worker_renders_a_committed_report(
    transactional_db: None, project_worker: WorkController
) -> None:
    """Integration test: a real worker in a thread, reading through its own connection."""
    report = Report.objects.create(title="integration")  # (1)!
    assert render_report.delay(report.pk).get(timeout=20) == "integration"  # (2)!
    report.refresh_from_db()
    assert report.render_count == 1


# --8<-- [end:integration]


# --8<-- [start:plain_db_antipattern]
def worker_test_under_plain_db(db: None, project_worker: WorkController) -> None:
    """ANTI-PATTERN: `db` wraps the test in a transaction that is never committed."""
    report = Report.objects.create(title="invisible")  # uncommitted, on the test's connection
    assert render_report.delay(report.pk).get(timeout=20) == "invisible"  # DoesNotExist


# --8<-- [end:plain_db_antipattern]


# --8<-- [start:eager_antipattern]
from snippets.django_integration.transactions import create_report_too_early
from snippets.project.celery import app  # noqa: F811


def eager_test_of_a_publish_before_commit(db: None) -> None:
    """ANTI-PATTERN: eager mode runs the task inline, inside the caller's transaction."""
    app.conf.task_always_eager = True  # what CELERY_TASK_ALWAYS_EAGER = True does
    try:
        report = create_report_too_early("eager")  # publishes before commit: the bug
    finally:
        app.conf.task_always_eager = False
    report.refresh_from_db()
    assert report.render_count == 1  # passes: the task saw the row it should not have seen yet


# --8<-- [end:eager_antipattern]
