"""Proof for docs/troubleshooting/django-database.md: a task published before its row was
committed (the in-thread worker), and a worker process's reused connection after its database
session died (real prefork workers, PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connections, transaction

from snippets.django_integration.models import Report
from snippets.django_integration.orm_patterns import database_session
from snippets.django_integration.transactions import (
    create_report,
    create_report_too_early,
    render_report,
)
from snippets.troubleshooting.django_database import CELERY_DB_REUSE_MAX

pytestmark = pytest.mark.django_db(transaction=True)

NOT_FOUND = "Report matching query does not exist."
TERMINATED = "terminating connection due to administrator command"
CLOSED = "the connection is closed"
REUSE_SETTINGS = "tests.troubleshooting.reuse_settings"


def renders(published: list[dict]) -> list[dict]:
    return [p for p in published if p["name"] == render_report.name]


@pytest.mark.antipattern("snippets/django_integration/transactions.py:antipattern")
def test_why_a_task_published_inside_the_transaction_does_not_find_its_row(
    celery_worker, published
):
    """The view's transaction is still open when the worker runs the task: `DoesNotExist:
    Report matching query does not exist.`, for a row that commits a moment later. Published
    on commit, the same task finds it."""
    with transaction.atomic():  # the view's transaction (ATOMIC_REQUESTS), not yet committed
        report = create_report_too_early("ts-too-early")
        [sent] = renders(published)
        with pytest.raises(Report.DoesNotExist) as raised:
            render_report.AsyncResult(sent["id"]).get(timeout=30)
    assert str(raised.value) == NOT_FOUND
    assert Report.objects.filter(pk=report.pk, rendered_at=None).exists()  # there, unrendered

    with transaction.atomic():
        report = create_report("ts-on-commit")
        assert len(renders(published)) == 1  # nothing new is published before the commit
    [_, sent] = renders(published)
    assert render_report.AsyncResult(sent["id"]).get(timeout=30) == "ts-on-commit"


def terminate(pid: int) -> None:
    """What a database restart or failover does to every open session."""
    killer = connections.create_connection("default")
    try:
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()


@pytest.mark.services("postgres")
@pytest.mark.deviation(
    f"DJANGO_SETTINGS_MODULE={REUSE_SETTINGS}",
    reason="the page's CELERY_DB_REUSE_MAX, CONN_MAX_AGE 600, health checks on or off",
)
@pytest.mark.deviation("TS_HEALTH_CHECKS", reason="turns CONN_HEALTH_CHECKS on: the fix")
def test_why_a_reused_connection_fails_every_task_after_its_session_died(worker_process):
    """CELERY_DB_REUSE_MAX: the session dies, the next task fails with `terminating connection
    due to administrator command` and the one after with `the connection is closed`. With the
    health check before each task, the next task reconnects and runs."""
    assert CELERY_DB_REUSE_MAX == 50
    env = {"DJANGO_SETTINGS_MODULE": REUSE_SETTINGS}
    broken = worker_process(env=env, ready=False)
    checked = worker_process(env={**env, "TS_HEALTH_CHECKS": "1"}, ready=False)
    for wp in (broken, checked):
        wp.wait_ready()

    def run(wp: object) -> int:
        return database_session.apply_async(queue=wp.queue).get(timeout=60)

    sessions = {wp.name: run(wp) for wp in (broken, checked)}
    assert run(broken) == sessions[broken.name]  # reused: the same session for the next task
    for pid in sessions.values():
        terminate(pid)

    with pytest.raises(Exception) as first:  # noqa: PT011 (django.db.utils.OperationalError)
        run(broken)
    assert type(first.value).__name__ == "OperationalError"
    assert TERMINATED in str(first.value)
    with pytest.raises(Exception) as second:  # noqa: PT011
        run(broken)
    assert str(second.value) == CLOSED  # and every task after it, until the recycle

    assert run(checked) != sessions[checked.name]  # a new session: the task ran
    broken.wait_for_log(f"OperationalError('{TERMINATED}")
