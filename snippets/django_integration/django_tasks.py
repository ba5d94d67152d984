"""Django 6's django.tasks beside Celery: one body, two front doors.

django.tasks is new in Django 6.0; on Django 5.2 this module defines only the Celery side
(the page's tests run on Django 6.1 and are deselected on 5.2).
"""

# --8<-- [start:body]
from django.db.models import F
from django.utils import timezone

from snippets.django_integration.models import Report


def publish_report(report_id: int) -> str:
    """The work itself: a plain function, no queue in sight, testable by calling it."""
    report = Report.objects.get(pk=report_id)
    Report.objects.filter(pk=report_id, rendered_at=None).update(  # once, however often run
        rendered_at=timezone.now(), render_count=F("render_count") + 1
    )
    return report.title


# --8<-- [end:body]


# --8<-- [start:celery]
from celery import shared_task


@shared_task
def publish_report_celery(report_id: int) -> str:
    """Celery front door: a worker, retries, canvas, beat, time limits, result backends."""
    return publish_report(report_id)


# --8<-- [end:celery]

import django

# Not measured: Django 5.2 cannot run this block, so coverage there would always miss it; the
# Django 6.1 session runs every line (tests/django_integration/test_django_tasks.py).
if django.VERSION >= (6, 0):  # pragma: no cover
    # --8<-- [start:django_task]
    from functools import partial

    from django.db import transaction
    from django.tasks import task

    @task
    def publish_report_task(report_id: int) -> str:
        """django.tasks front door: whatever backend TASKS names runs it."""
        return publish_report(report_id)

    def create_and_publish(title: str) -> Report:
        """Enqueue on commit: django.tasks has no delay_on_commit, so say it with on_commit."""
        with transaction.atomic():
            report = Report.objects.create(title=title)
            transaction.on_commit(partial(publish_report_task.enqueue, report.pk))  # (1)!
        return report

    # --8<-- [end:django_task]

    # --8<-- [start:antipattern]
    def create_and_publish_too_early(title: str) -> Report:
        """ANTI-PATTERN: enqueue inside the transaction; ImmediateBackend runs it right here."""
        with transaction.atomic():
            report = Report.objects.create(title=title)
            publish_report_task.enqueue(report.pk)  # runs now, inside the open transaction
        return report

    # --8<-- [end:antipattern]
