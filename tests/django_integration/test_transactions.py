"""Proof for docs/django-integration/transactions.md: enqueue after commit, on a real worker."""

import logging
from functools import partial

import django
import pytest
from celery.signals import task_prerun
from django.db import connection, transaction
from kombu.exceptions import OperationalError

from snippets.django_integration.models import OutboxMessage, Report
from snippets.django_integration.transactions import (
    create_report,
    create_report_on,
    create_report_on_other_too_early,
    create_report_robust,
    create_report_too_early,
    create_report_tracked,
    create_report_with_outbox,
    relay_outbox,
    render_report,
)
from tests.harness.db import Rollback, row_locked
from tests.harness.redelivery import deliver_again

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def renders_of(published: list[dict]) -> list[dict]:
    return [p for p in published if p["name"] == render_report.name]


def test_commit_publishes_once_and_the_worker_renders(celery_worker, published):
    """one message after commit; the worker renders the report once."""
    report = create_report("Q3 revenue")

    [sent] = renders_of(published)
    assert sent["args"] == [report.pk]
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "Q3 revenue"
    report.refresh_from_db()
    assert report.rendered_at is not None
    assert report.render_count == 1


def test_a_pre_generated_task_id_links_the_row_to_the_task_that_ran(celery_worker, published):
    """The row holds its task's id before the commit, while nothing is published yet; after
    the commit one message carries that id, and the task the worker ran (task_prerun, the
    result backend) is that one. A rollback leaves neither row nor message.

    Fails without `task_id=` (the message gets a new id), or with `apply_async()` in place of
    `apply_async_on_commit()` (published before the commit)."""
    with pytest.raises(Rollback), transaction.atomic():
        create_report_tracked("rolled back")
        raise Rollback
    assert (Report.objects.exists(), renders_of(published)) == (False, [])

    ran: list[str] = []

    def record(sender=None, task_id=None, **_kw) -> None:
        if sender.name == render_report.name:
            ran.append(task_id)

    task_prerun.connect(record, weak=False)
    try:
        with transaction.atomic():
            report = create_report_tracked("tracked")
            stored = str(Report.objects.get(pk=report.pk).render_task_id)
            assert renders_of(published) == []  # the row knows its task; nothing sent yet
        [sent] = renders_of(published)
        assert sent["id"] == stored
        assert render_report.AsyncResult(stored).get(timeout=20) == "tracked"
    finally:
        task_prerun.disconnect(record)
    assert ran == [stored]  # the worker ran the task whose id the row holds
    assert Report.objects.get(pk=report.pk).render_count == 1


@pytest.mark.antipattern("snippets/django_integration/transactions.py:antipattern")
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
    """`on_commit(..., using="other")`."""
    with transaction.atomic(using="other"):
        report = create_report_on("other db", using="other")
        assert renders_of(published) == []
    [sent] = renders_of(published)
    assert sent["args"] == [report.pk]
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "other db"
    assert Report.objects.using("other").get(pk=report.pk).render_count == 1
    assert not Report.objects.exists()  # nothing was written to the default database


def test_unknown_id_fails_loudly_and_is_not_retried(celery_worker, published):
    """one publish, one failure, no retry."""
    result = render_report.delay(987654)
    with pytest.raises(Report.DoesNotExist):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    assert len(renders_of(published)) == 1  # a retry would have published it again


def test_a_rolled_back_savepoint_drops_only_its_own_task(celery_worker, published):
    """on_commit callbacks registered inside a rolled-back savepoint are discarded."""
    with transaction.atomic():
        kept = create_report("kept")
        with pytest.raises(Rollback), transaction.atomic():  # a savepoint
            create_report("dropped")
            raise Rollback
        assert renders_of(published) == []
    [sent] = renders_of(published)
    assert sent["args"] == [kept.pk]
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "kept"
    assert list(Report.objects.values_list("title", flat=True)) == ["kept"]


@pytest.mark.antipattern("snippets/django_integration/transactions.py:other_db_antipattern")
def test_why_delay_on_commit_inside_another_database_block_publishes_at_once(
    celery_worker, published
):
    """delay_on_commit() registers on "default", which is in autocommit: it publishes now."""
    with pytest.raises(Rollback), transaction.atomic(using="other"):
        create_report_on_other_too_early("other, rolled back")
        [sent] = renders_of(published)  # published while the "other" transaction is open
        raise Rollback
    assert not Report.objects.using("other").exists()
    with pytest.raises(Report.DoesNotExist):
        render_report.AsyncResult(sent["id"]).get(timeout=20)


def test_broker_down_at_commit_plain_on_commit_raises_after_the_row_committed(
    celery_worker, broker_down, published
):
    """The row is committed, the publish fails, and the caller gets the broker's error."""
    with broker_down(), pytest.raises(OperationalError):
        create_report("broker down")
    report = Report.objects.get(title="broker down")  # committed all the same
    # The broker is back: a later task runs on the worker, the lost one never does (a publish
    # retried after the outage would have rendered it before the later one finished).
    later = create_report("later")
    [*_, sent] = renders_of(published)
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "later"
    assert Report.objects.get(pk=later.pk).render_count == 1
    assert Report.objects.get(pk=report.pk).render_count == 0  # its task was lost


@pytest.mark.antipattern("snippets/django_integration/transactions.py:robust_antipattern")
def test_why_robust_on_commit_logs_the_failure_and_loses_the_task(
    celery_worker, broker_down, published, caplog
):
    """robust=True hides the failure from the caller: logged, and the task is lost."""
    with broker_down(), caplog.at_level(logging.ERROR, logger="django.db.backends.base"):
        report = create_report_robust("robust")
    [record] = [r for r in caplog.records if r.name == "django.db.backends.base"]
    assert "in on_commit()" in record.getMessage()
    assert isinstance(record.exc_info[1], OperationalError)
    # The broker is back: a later task runs, the lost one never does.
    later = create_report("later")
    [*_, sent] = renders_of(published)
    assert render_report.AsyncResult(sent["id"]).get(timeout=20) == "later"
    assert Report.objects.get(pk=report.pk).render_count == 0
    assert Report.objects.get(pk=later.pk).render_count == 1


def test_outbox_survives_a_broker_outage_and_runs_the_task_exactly_once(
    celery_worker, broker_down, published, caplog
):
    """Broker down at commit: the outbox row waits; after recovery exactly one task runs."""
    with broker_down(), caplog.at_level(logging.ERROR):
        report = create_report_with_outbox("outbox")  # the relay nudge fails, logged
        assert relay_outbox() == 0  # a relay run during the outage: nothing sent, nothing lost
    assert "broker unavailable: 1 of 1 outbox rows left" in caplog.text
    [record] = [r for r in caplog.records if "broker unavailable" in r.getMessage()]
    assert record.name == "snippets.outbox"  # the logger a LOGGING config routes
    [row] = OutboxMessage.objects.all()
    assert row.sent_at is None
    assert row.args == [report.pk]

    # The broker is back; beat's next tick publishes the relay, which publishes the task.
    attempts_during_outage = len(renders_of(published))  # failed publishes signal too
    assert relay_outbox.delay().get(timeout=20) == 1
    result = render_report.AsyncResult(str(row.task_id))
    assert result.get(timeout=20) == "outbox"
    assert relay_outbox.delay().get(timeout=20) == 0  # already sent: not published twice
    after_outage = renders_of(published)[attempts_during_outage:]
    assert [p["id"] for p in after_outage] == [str(row.task_id)]
    assert Report.objects.get(pk=report.pk).render_count == 1
    assert OutboxMessage.objects.get().sent_at is not None


def test_outbox_commits_nothing_when_the_transaction_rolls_back(celery_worker, published):
    """no report, no outbox row."""
    with pytest.raises(Rollback), transaction.atomic():
        create_report_with_outbox("rolled back")
        raise Rollback
    assert not OutboxMessage.objects.exists()
    assert relay_outbox() == 0
    assert renders_of(published) == []


@pytest.mark.services("postgres")
def test_a_relay_skips_the_rows_another_relay_holds(celery_worker, published):
    """Two relays at once never take the same rows: a row another relay's transaction holds is
    skipped at once, and stays for the next run; the relay sends the others.

    Fails without `skip_locked=True`: the relay waits for the lock (here: until lock_timeout)."""
    reports = [Report.objects.create(title=t) for t in ("held", "free")]
    held, free = (
        OutboxMessage.objects.create(task_name=render_report.name, args=[r.pk]) for r in reports
    )
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")  # a relay that waits fails instead of hanging
    try:
        with row_locked(held):  # the other relay, between its SELECT and its commit
            assert relay_outbox() == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert [p["id"] for p in renders_of(published)] == [str(free.task_id)]
    assert render_report.AsyncResult(str(free.task_id)).get(timeout=20) == "free"
    assert OutboxMessage.objects.get(pk=held.pk).sent_at is None


def test_robust_on_commit_with_a_partial_depends_on_the_django_version(caplog):
    """Django 5.2 formats the log line with func.__qualname__, which a partial lacks."""

    def fail(reason: str) -> None:
        raise OperationalError(reason)

    with caplog.at_level(logging.ERROR, logger="django.db.backends.base"):
        if django.VERSION < (6, 0):
            with pytest.raises(AttributeError, match="__qualname__"), transaction.atomic():
                transaction.on_commit(partial(fail, "broker down"), robust=True)
        else:
            with transaction.atomic():
                transaction.on_commit(partial(fail, "broker down"), robust=True)
            assert "broker down" in caplog.text


@pytest.mark.proves_idempotent(task=render_report)
def test_a_render_delivered_again_renders_nothing_more(shared_prefork_worker):
    """The same message delivered again to a `celery worker` (same task id, as the broker hands
    back an unacked message): the report stays rendered once, at the first run's time.

    Fails without `rendered_at=None` in the UPDATE: render_count 2, rendered_at moved."""
    wp = shared_prefork_worker
    report = Report.objects.create(title="twice")
    first = render_report.apply_async((report.pk,), queue=wp.queue)
    assert first.get(timeout=30) == "twice"
    rendered = Report.objects.get(pk=report.pk)
    assert deliver_again(wp, render_report, (report.pk,), first.id) == "twice"
    again = Report.objects.get(pk=report.pk)
    assert (again.render_count, again.rendered_at) == (1, rendered.rendered_at)


@pytest.mark.proves_idempotent(task=relay_outbox)
def test_a_relay_delivered_again_publishes_nothing_more(shared_prefork_worker, celery_worker):
    """The relay's message delivered again finds its rows marked sent and publishes nothing: it
    returns 0 and the row keeps its first `sent_at`; the relayed render ran once.

    Fails if the relay took rows already sent (it would return 1 and publish the task again)."""
    wp = shared_prefork_worker
    report = Report.objects.create(title="relayed")
    row = OutboxMessage.objects.create(task_name=render_report.name, args=[report.pk])
    first = relay_outbox.apply_async(queue=wp.queue)
    assert first.get(timeout=30) == 1  # sent one
    sent_at = OutboxMessage.objects.get(pk=row.pk).sent_at
    assert sent_at is not None
    assert deliver_again(wp, relay_outbox, (), first.id) == 0  # then none
    assert OutboxMessage.objects.get(pk=row.pk).sent_at == sent_at
    assert render_report.AsyncResult(str(row.task_id)).get(timeout=30) == "relayed"
    assert Report.objects.get(pk=report.pk).render_count == 1
