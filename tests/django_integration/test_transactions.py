"""Proof for docs/django-integration/transactions.md: enqueue after commit, on a real worker."""

import pytest
from django.db import transaction

from snippets.django_integration.models import Report
from snippets.django_integration.transactions import (
    create_report,
    create_report_on,
    create_report_too_early,
    render_report,
)

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Rollback(Exception):
    """Raised to roll the surrounding transaction back."""


def renders_of(published: list[dict]) -> list[dict]:
    return [p for p in published if p["name"] == render_report.name]


def test_commit_publishes_once_and_the_worker_renders(celery_worker, published):
    report = create_report("Q3 revenue")

    [sent] = renders_of(published)
    assert sent["args"] == [report.pk]
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "Q3 revenue"
    report.refresh_from_db()
    assert report.rendered_at is not None
    assert report.render_count == 1


@pytest.mark.antipattern("create_report_too_early")
def test_why_delay_inside_atomic_publishes_a_task_for_a_rolled_back_row(celery_worker, published):
    """The anti-pattern: the rollback removes the row, not the message already published."""
    with pytest.raises(Rollback), transaction.atomic():
        create_report_too_early("never committed")
        raise Rollback

    [sent] = renders_of(published)  # the message left although the row did not survive
    assert not Report.objects.exists()
    with pytest.raises(Report.DoesNotExist):
        render_report.AsyncResult(sent["id"]).get(timeout=20)


def test_why_delay_on_commit_publishes_nothing_on_rollback(celery_worker, published):
    """The pattern under the same rollback: no row, and no message either."""
    with pytest.raises(Rollback), transaction.atomic():
        create_report("never committed")
        raise Rollback

    assert renders_of(published) == []
    assert not Report.objects.exists()


def test_task_is_published_only_when_the_outer_block_commits(celery_worker, published):
    """Inside an outer atomic block, delay_on_commit waits for the outermost commit."""
    with transaction.atomic():
        report = create_report("nested")
        assert renders_of(published) == []  # inner block done, outer still open
    [sent] = renders_of(published)
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "nested"
    assert Report.objects.get(pk=report.pk).render_count == 1


def test_on_commit_with_using_waits_for_the_other_database(celery_worker, published):
    with transaction.atomic(using="other"):
        report = create_report_on("other db", using="other")
        assert renders_of(published) == []
    [sent] = renders_of(published)
    assert sent["args"] == [report.pk]
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "other db"
    assert Report.objects.using("other").get(pk=report.pk).render_count == 1
    assert not Report.objects.exists()  # nothing was written to the default database


def test_unknown_id_fails_loudly_and_is_not_retried(celery_worker, published):
    result = render_report.delay(987654)
    with pytest.raises(Report.DoesNotExist):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    assert len(renders_of(published)) == 1  # a retry would have published it again
