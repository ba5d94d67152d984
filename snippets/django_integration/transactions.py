"""Enqueue after commit: the worker must never receive an id for a row it cannot see."""

# --8<-- [start:task]
from celery import shared_task
from django.db.models import F
from django.utils import timezone

from snippets.django_integration.models import Report


@shared_task
def render_report(report_id: int, using: str = "default") -> str:
    """Render a report; enqueued only after commit, so the row is there to read."""
    report = Report.objects.using(using).get(pk=report_id)  # DoesNotExist if enqueued early
    Report.objects.using(using).filter(pk=report_id).update(
        rendered_at=timezone.now(), render_count=F("render_count") + 1
    )
    return report.title


# --8<-- [end:task]


# --8<-- [start:pattern]
from functools import partial

from django.db import transaction


def create_report(title: str) -> Report:
    """Create the row and enqueue its task; the task is published only if the block commits."""
    with transaction.atomic():
        report = Report.objects.create(title=title)
        render_report.delay_on_commit(report.pk)  # (1)!
    return report


def create_report_on(title: str, using: str) -> Report:
    """The same on another database: delay_on_commit() only watches the default one."""
    with transaction.atomic(using=using):
        report = Report.objects.using(using).create(title=title)
        transaction.on_commit(
            partial(render_report.delay, report.pk, using=using), using=using
        )  # (2)!
    return report


# --8<-- [end:pattern]


# --8<-- [start:antipattern]
def create_report_too_early(title: str) -> Report:
    """ANTI-PATTERN: the task is published at once, even if the transaction rolls back."""
    with transaction.atomic():
        report = Report.objects.create(title=title)
        render_report.delay(report.pk)  # the worker may run before the commit, or after a rollback
    return report


# --8<-- [end:antipattern]
