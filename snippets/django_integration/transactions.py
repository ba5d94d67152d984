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
    Report.objects.using(using).filter(pk=report_id, rendered_at=None).update(  # once only
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


# --8<-- [start:task_id]
import uuid


def create_report_tracked(title: str) -> Report:
    """The row stores the id its task will carry, before anything is published."""
    task_id = uuid.uuid4()  # (1)!
    with transaction.atomic():
        report = Report.objects.create(title=title, render_task_id=task_id)  # (2)!
        render_report.apply_async_on_commit((report.pk,), task_id=str(task_id))  # (3)!
    return report


# --8<-- [end:task_id]


# --8<-- [start:antipattern]
def create_report_too_early(title: str) -> Report:
    """ANTI-PATTERN: the task is published at once, even if the transaction rolls back."""
    with transaction.atomic():
        report = Report.objects.create(title=title)
        render_report.delay(report.pk)  # the worker may run before the commit, or after a rollback
    return report


# --8<-- [end:antipattern]


# --8<-- [start:other_db_antipattern]
def create_report_on_other_too_early(title: str) -> Report:
    """ANTI-PATTERN: delay_on_commit() watches "default"; in a block on "other" it fires at once."""
    with transaction.atomic(using="other"):
        report = Report.objects.using("other").create(title=title)
        render_report.delay_on_commit(report.pk, using="other")  # published before the commit
    return report


# --8<-- [end:other_db_antipattern]


# --8<-- [start:robust_antipattern]
def create_report_robust(title: str) -> Report:
    """ANTI-PATTERN when the task matters: robust=True logs a failed publish and moves on."""
    with transaction.atomic():
        report = Report.objects.create(title=title)

        def publish() -> None:  # a named function: Django 5.2 cannot log a failed partial
            render_report.delay(report.pk)

        transaction.on_commit(publish, robust=True)
    return report  # committed, but if the broker was down its task is gone for good


# --8<-- [end:robust_antipattern]


# --8<-- [start:outbox]
import logging

from celery import current_app
from kombu.exceptions import OperationalError

from snippets.django_integration.models import OutboxMessage

logger = logging.getLogger("snippets.outbox")


def create_report_with_outbox(title: str) -> Report:
    """The row and the task to publish commit together, or not at all."""
    with transaction.atomic():
        report = Report.objects.create(title=title)
        OutboxMessage.objects.create(task_name=render_report.name, args=[report.pk])  # (1)!
        transaction.on_commit(relay_outbox.delay, robust=True)  # (2)!
    return report


@shared_task
def relay_outbox(batch: int = 100) -> int:
    """Publish unsent outbox rows; run by beat every few seconds and nudged after commit."""
    sent = 0
    with transaction.atomic():
        rows = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)  # (3)!
            .filter(sent_at=None)
            .order_by("pk")[:batch]
        )
        for row in rows:
            try:
                task_id = str(row.task_id)  # (4)!
                current_app.send_task(row.task_name, args=row.args, task_id=task_id)
            except OperationalError:
                logger.exception(
                    "broker unavailable: %d of %d outbox rows left for the next run",
                    len(rows) - sent,
                    len(rows),
                )
                break  # rows sent so far are marked below; the rest wait, nothing is lost
            row.sent_at = timezone.now()
            row.save(update_fields=["sent_at"])
            sent += 1
    return sent


# --8<-- [end:outbox]
