"""Timeouts: a soft limit to clean up, a hard limit as the backstop, a timeout on every call."""

# --8<-- [start:task]
import contextlib
import logging
import os
import tempfile
import time
from typing import TextIO

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from snippets.error_handling.models import Export

logger = logging.getLogger(__name__)


def write_row(handle: TextIO, n: int) -> None:
    """Stands in for the real per-row work (a query, a render): a write and a short pause."""
    handle.write(f"{n}\n")
    handle.flush()
    time.sleep(0.05)


@shared_task(soft_time_limit=60, time_limit=75)  # (1)!
def export_rows(export_id: int, rows: int) -> int:
    """Write an export file; if it runs out of time, remove the partial file and say so."""
    if Export.objects.filter(pk=export_id, status=Export.Status.DONE).exists():  # (2)!
        return rows
    path = ""
    try:  # (3)!
        fd, path = tempfile.mkstemp(prefix=f"export-{export_id}-", suffix=".csv")
        Export.objects.filter(pk=export_id).update(partial_file=path)
        with os.fdopen(fd, "w") as handle:
            for n in range(rows):
                write_row(handle, n)
        Export.objects.filter(pk=export_id).update(status=Export.Status.DONE, rows_written=rows)
    except SoftTimeLimitExceeded:
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        connection.close()  # (4)!
        Export.objects.filter(pk=export_id).update(status=Export.Status.TIMED_OUT, partial_file="")
        raise  # (5)!
    return rows


# --8<-- [end:task]


# --8<-- [start:antipattern]
@shared_task(
    soft_time_limit=60,
    time_limit=75,
)
def export_rows_skipping_errors(export_id: int, rows: int) -> int:
    """ANTI-PATTERN: `except Exception` around each row also swallows SoftTimeLimitExceeded."""
    fd, path = tempfile.mkstemp(prefix=f"export-{export_id}-", suffix=".csv")
    Export.objects.filter(pk=export_id).update(partial_file=path)
    with os.fdopen(fd, "w") as handle:
        for n in range(rows):
            try:
                write_row(handle, n)
            except Exception:  # "skip the bad row" - and the soft time limit with it
                logger.warning("skipping row %s of export %s", n, export_id)
    Export.objects.filter(pk=export_id).update(status=Export.Status.DONE, rows_written=rows)
    return rows


# --8<-- [end:antipattern]


# --8<-- [start:calls]
import requests
from django.core.mail import send_mail
from django.db import connection, transaction  # noqa: F811

HTTP_TIMEOUT = (3.05, 10)  # (connect, read) seconds


def fetch_status(url: str, timeout: tuple[float, float] = HTTP_TIMEOUT) -> int:
    """requests has no default timeout: without one, a silent server blocks forever."""
    return requests.get(url, timeout=timeout).status_code


def send_receipt(to: str) -> None:
    """Bounded by settings.EMAIL_TIMEOUT (Django's default, None, waits forever)."""
    send_mail("Your receipt", "Thank you for your order.", None, [to])


def fetch_with_deadline(sql: str, params: list, limit_ms: int = 5_000) -> list[tuple]:
    """Run a query that PostgreSQL cancels after limit_ms (set for this transaction only)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(limit_ms)])
        cursor.execute(sql, params)
        return cursor.fetchall()


# --8<-- [end:calls]
