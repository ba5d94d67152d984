"""Proof for docs/error-handling/timeouts.md: soft limit -> cleanup, hard limit -> a new child."""

from __future__ import annotations

import glob
import os
import smtplib
import time

import pytest
import requests
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.db import OperationalError, connection

from snippets.error_handling.models import Export
from snippets.error_handling.timeouts import (
    export_rows,
    export_rows_skipping_errors,
    fetch_status,
    fetch_with_deadline,
    send_receipt,
)
from tests.harness.db import row_locked
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def leftover_files(export: Export, tmp_path) -> list[str]:
    """Export files in the worker's temporary directory (TMPDIR=tmp_path: this test's own)."""
    return glob.glob(os.path.join(tmp_path, f"export-{export.pk}-*.csv"))


def test_the_export_declares_a_soft_limit_that_fires_before_its_hard_limit(celery_app):
    """The limits the page shows are in force: finite, soft first, both below the redelivery
    window (the proofs below set shorter ones per call, to run in seconds)."""
    soft, hard = export_rows.soft_time_limit, export_rows.time_limit
    assert 0 < soft < hard < celery_app.conf.broker_transport_options["visibility_timeout"]


@pytest.mark.antipattern(task=export_rows_skipping_errors)
def test_why_swallowing_the_soft_limit_ends_in_a_kill_without_cleanup(worker_process, tmp_path):
    """`except Exception` eats SoftTimeLimitExceeded: the hard limit kills the child mid-work.

    Then, on the same worker (a new child), the pattern under the same limits cleans up.
    """
    wp = worker_process(env={"TMPDIR": str(tmp_path)})
    [child] = wait_until(wp.pool_pids, what="the pool child")
    export = Export.objects.create()
    first = export_rows_skipping_errors.apply_async(
        (export.pk, 100_000), queue=wp.queue, soft_time_limit=1, time_limit=3
    )

    with pytest.raises(TimeLimitExceeded):
        first.get(timeout=60)
    export.refresh_from_db()
    assert export.status == Export.Status.RUNNING  # no cleanup ran: it looks like it still runs
    # and the partial file stays behind
    assert leftover_files(export, tmp_path) == [export.partial_file]
    os.unlink(export.partial_file)
    wp.wait_for_log(
        f"Hard time limit (3s) exceeded for {export_rows_skipping_errors.name}[{first.id}]"
    )
    assert "skipping row" in wp.log()  # the soft limit was "handled" as a bad row
    # The failure logger ran in the worker's main process and still names the input.
    wp.wait_for_log(f"export_rows_skipping_errors[{first.id}] failed: TimeLimitExceeded(3")
    wp.wait_for_log(f"(args=({export.pk}, 100000), retries=None")  # the main process's line

    # The worker replaced the killed child and keeps serving: the pattern, same limits.
    new = wait_until(lambda: [p for p in wp.pool_pids() if p != child], what="a new child")
    assert child not in new
    export = Export.objects.create()
    result = export_rows.apply_async(
        (export.pk, 100_000), queue=wp.queue, soft_time_limit=1, time_limit=3
    )
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=60)
    export.refresh_from_db()
    assert export.status == Export.Status.TIMED_OUT  # the except block ran...
    assert export.partial_file == ""
    assert leftover_files(export, tmp_path) == []  # ...and removed the partial file
    assert export_rows.apply_async((export.pk, 3), queue=wp.queue).get(timeout=60) == 3
    # Given the time, the anti-pattern works too: why it passes review.
    assert export_rows_skipping_errors.apply_async((export.pk, 3), queue=wp.queue).get(60) == 3
    killed = f"export_rows_skipping_errors[{first.id}] received"
    assert wp.log().count(killed) == 1  # acked after the hard limit: not redelivered


@pytest.mark.services("postgres")
@pytest.mark.proves_idempotent(task=export_rows)
def test_a_soft_limit_inside_the_first_query_still_cleans_up(worker_process, tmp_path):
    """The limit strikes while the task's first `update()` waits on a row lock, before any row
    is written: the file made just before is removed and the export is marked timed out,
    through a fresh connection (the interrupted one is mid-query).

    Then the same message twice more (a redelivery: the same id): the first runs the timed-out
    export to the end, the second finds it done and writes no second file (without the DONE
    check it would)."""
    wp = worker_process(env={"TMPDIR": str(tmp_path)})
    export = Export.objects.create()
    with row_locked(export):
        result = export_rows.apply_async(
            (export.pk, 3), queue=wp.queue, soft_time_limit=1, time_limit=30
        )
        wp.wait_for_log(f"Soft time limit (1s) exceeded for {export_rows.name}[{result.id}]")
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=60)
    export.refresh_from_db()
    assert (export.status, export.partial_file) == (Export.Status.TIMED_OUT, "")
    assert leftover_files(export, tmp_path) == []

    limits = {"soft_time_limit": 1, "time_limit": 30}  # as the first delivery carried them
    rerun = redeliver(wp, export_rows, result, (export.pk, 3), **limits)
    assert (rerun["status"], rerun["result"]) == ("SUCCESS", 3)
    export.refresh_from_db()
    assert (export.status, export.rows_written) == (Export.Status.DONE, 3)
    assert leftover_files(export, tmp_path) == [export.partial_file]
    again = redeliver(wp, export_rows, result, (export.pk, 3), **limits)
    assert (again["status"], again["result"]) == ("SUCCESS", 3)
    assert leftover_files(export, tmp_path) == [export.partial_file]  # no second file


@pytest.mark.deviation(
    "--pool=solo|threads",
    reason="the pools under test: neither enforces a time limit",
)
def test_solo_and_threads_pools_enforce_no_time_limit(worker_process, tmp_path):
    """The same limits as above; the task runs ~2 s past its 0.5 s soft limit and succeeds."""
    env = {"TMPDIR": str(tmp_path)}
    workers = [worker_process(pool=pool, env=env, ready=False) for pool in ("solo", "threads")]
    for wp in workers:
        wp.wait_ready()
        export = Export.objects.create()
        result = export_rows.apply_async(
            (export.pk, 40), queue=wp.queue, soft_time_limit=0.5, time_limit=1
        )

        assert result.get(timeout=60) == 40, wp.log()
        export.refresh_from_db()
        assert export.status == Export.Status.DONE


def test_an_http_call_to_a_silent_server_times_out(silent_server):
    """A TCP server that accepts and never answers: the HTTP call raises `requests.ReadTimeout`."""
    with pytest.raises(requests.ReadTimeout):
        fetch_status(f"http://127.0.0.1:{silent_server}/status", timeout=(1, 0.5))


def test_the_default_timeout_bounds_a_call_to_a_silent_server(silent_server):
    """Called as the page calls it, with no timeout argument: HTTP_TIMEOUT still ends the wait
    (after its read timeout)."""
    began = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        fetch_status(f"http://127.0.0.1:{silent_server}/status")
    assert time.monotonic() - began < 30


def test_email_timeout_bounds_a_silent_smtp_server(silent_server, settings):
    """The same silent server as SMTP: Django's backend gives up with `SMTPServerDisconnected` after
    `EMAIL_TIMEOUT`."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent_server
    settings.EMAIL_TIMEOUT = 0.5  # the project sets 10; Django's default None would hang here

    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        send_receipt("customer@example.com")


@pytest.mark.services("postgres")
def test_statement_timeout_cancels_a_slow_query_for_this_transaction_only():
    """PostgreSQL cancels `pg_sleep(5)` after 200 ms; the next transaction on the same connection
    has no timeout."""
    with pytest.raises(OperationalError, match="statement timeout"):
        fetch_with_deadline("SELECT pg_sleep(%s)", [5], limit_ms=200)

    assert fetch_with_deadline("SELECT 1 + %s", [1], limit_ms=200) == [(2,)]
    with connection.cursor() as cursor:  # set_config(..., true): gone with the transaction
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("0",)
