"""The ORM in tasks: pass ids, re-fetch, claim work with row locks, update without races."""

# --8<-- [start:refetch]
import logging

from celery import shared_task

from snippets.django_integration.models import Report

logger = logging.getLogger("snippets.orm")


@shared_task
def archive_report(report_id: int) -> bool:
    """Take the id, read the row when the task runs: the worker acts on today's data."""
    report = Report.objects.filter(pk=report_id).first()  # (1)!
    if report is None:  # (2)!
        logger.warning("archive_report: report %s no longer exists, nothing to do", report_id)
        return False
    if report.title.startswith("[archived] "):  # (3)!
        return True
    Report.objects.filter(pk=report.pk).update(title=f"[archived] {report.title}")
    return True


# --8<-- [end:refetch]


# --8<-- [start:instance_antipattern]
@shared_task
def archive_report_instance(report: Report) -> bool:
    """ANTI-PATTERN: a model instance is not JSON; and if pickled, it is a stale copy."""
    report.title = f"[archived] {report.title}"
    report.save(update_fields=["title"])
    return True


# --8<-- [end:instance_antipattern]


# --8<-- [start:claim]
from celery import Task
from django.db import transaction
from django.db.models import F

from snippets.django_integration.models import Job


@shared_task(bind=True)
def claim_next_job(self: Task, worker: str) -> int | None:
    """Claim the oldest pending job; concurrent claimers each get a different one."""
    with transaction.atomic():
        mine = Job.objects.filter(claim_id=self.request.id).first()  # (1)!
        if mine is not None:
            return mine.pk  # a redelivery: this message's claim committed before
        job = (
            Job.objects.select_for_update(skip_locked=True)  # (2)!
            .filter(status=Job.Status.PENDING)
            .order_by("pk")
            .first()
        )
        if job is None:
            return None
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.RUNNING,
            claimed_by=worker,
            claim_id=self.request.id,
            claims=F("claims") + 1,
        )
    return job.pk  # the work itself runs after the commit, with the lock released


# --8<-- [end:claim]


# --8<-- [start:claim_antipattern]
import time


@shared_task
def claim_next_job_racy(worker: str, pause: float = 0.0) -> int | None:
    """ANTI-PATTERN: read, then write; two workers both read "pending" and both win."""
    job = Job.objects.filter(status=Job.Status.PENDING).order_by("pk").first()
    if job is None:
        return None
    time.sleep(pause)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, claimed_by=worker, claims=F("claims") + 1
    )
    return job.pk


# --8<-- [end:claim_antipattern]


# --8<-- [start:counter]
from snippets.django_integration.models import Reservation, StockItem


@shared_task(bind=True)
def reserve_stock(self: Task, item_id: int, quantity: int) -> bool:
    """Decrement only if enough is left, in one UPDATE: no read-modify-write window."""
    with transaction.atomic():
        done = Reservation.objects.filter(task_id=self.request.id).first()  # (1)!
        if done is not None:
            return done.granted  # a redelivery: this message reserved (or was refused) before
        updated = StockItem.objects.filter(pk=item_id, available__gte=quantity).update(
            available=F("available") - quantity  # (2)!
        )
        Reservation.objects.create(  # (3)!
            task_id=self.request.id, item_id=item_id, quantity=quantity, granted=bool(updated)
        )
    if not updated:
        logger.info("reserve_stock: item %s has fewer than %s left", item_id, quantity)
    return bool(updated)  # (4)!


# --8<-- [end:counter]


# --8<-- [start:counter_antipattern]
@shared_task
def reserve_stock_racy(item_id: int, quantity: int, pause: float = 0.0) -> bool:
    """ANTI-PATTERN: read the count in Python, check, write it back: concurrent calls oversell."""
    item = StockItem.objects.get(pk=item_id)
    if item.available < quantity:
        return False
    time.sleep(pause)
    item.available -= quantity
    item.save(update_fields=["available"])  # writes back a number computed from a stale read
    return True


# --8<-- [end:counter_antipattern]


# --8<-- [start:connections]
from django.db import connection


@shared_task
def database_session() -> int:
    """The PostgreSQL backend process serving this task: a new one means a new connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


# --8<-- [end:connections]

# --8<-- [start:reuse_setting]
# settings.py: let each worker process reuse its connection for this many tasks.
CELERY_DB_REUSE_MAX = 50
# --8<-- [end:reuse_setting]
