"""Proof for docs/django-integration/orm-patterns.md: the ORM in tasks, on real workers."""

import logging

import pytest
from celery import Celery
from celery.fixups.django import DjangoWorkerFixup
from django.db import connections
from kombu.exceptions import EncodeError

from snippets.django_integration.models import Job, Report, Reservation, StockItem
from snippets.django_integration.orm_patterns import (
    archive_report,
    archive_report_instance,
    claim_next_job,
    claim_next_job_racy,
    database_session,
    reserve_stock,
    reserve_stock_racy,
)
from tests.harness.db import row_locked
from tests.harness.redelivery import deliver_again
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
RACE_WINDOW = 2.0  # seconds both claimers hold between read and write: both have read by then


def waiting_on_locks() -> int:
    """Sessions of the test database waiting on a lock."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_the_task_re_reads_the_row_when_it_runs(celery_worker):
    """the task sees a change made after publish."""
    report = Report.objects.create(title="Q3")
    Report.objects.filter(pk=report.pk).update(title="Q3 (final)")  # changed after "enqueue"
    assert archive_report.delay(report.pk).get(timeout=20) is True
    assert Report.objects.get(pk=report.pk).title == "[archived] Q3 (final)"


def test_a_row_deleted_before_the_task_runs_is_logged_and_not_retried(
    celery_worker, published, caplog
):
    """`False`, a WARNING naming the id, one publish."""
    report = Report.objects.create(title="gone")
    report_id = report.pk
    report.delete()
    with caplog.at_level(logging.WARNING, logger="snippets.orm"):
        assert archive_report.delay(report_id).get(timeout=20) is False
    assert f"report {report_id} no longer exists" in caplog.text
    [record] = [r for r in caplog.records if "no longer exists" in r.getMessage()]
    assert record.name == "snippets.orm"  # the logger a LOGGING config routes
    assert len(published) == 1  # one publish: no retry


@pytest.mark.antipattern(task=archive_report_instance)
def test_why_a_model_instance_argument_fails_to_publish(celery_app, celery_worker, published):
    """Called as a function it works; published, the JSON serializer refuses it."""
    report = Report.objects.create(title="instance")
    assert archive_report_instance(report) is True  # a unit test calling the body passes

    with pytest.raises(EncodeError, match="not JSON serializable"):
        archive_report_instance.delay(report)

    # Eager apply_async round-trips the arguments through the serializer (celery/app/task.py,
    # Task.apply_async under task_always_eager): since Celery 4.3, commit 8dcc621
    # (celery/celery#4456), in tag v4.3.0rc1 and later, in no v4.2.x tag.
    assert celery_app.conf.task_always_eager is False
    celery_app.conf.task_always_eager = True
    try:
        with pytest.raises(EncodeError, match="not JSON serializable"):
            archive_report_instance.delay(report)
    finally:
        celery_app.conf.task_always_eager = False
    # The pattern: an id publishes, and the body re-reads the row on the worker.
    assert archive_report.delay(report.pk).get(timeout=20) is True


@pytest.mark.services("postgres")
@pytest.mark.antipattern(task=claim_next_job_racy)
def test_why_two_workers_claim_the_same_job_without_a_lock(worker_process):
    """Two pool processes claim at once: without a row lock both win the same job;
    with select_for_update(skip_locked=True) each wins a different one."""
    wp = worker_process(concurrency=2)
    first, second = (Job.objects.create(title=t) for t in ("first", "second"))

    racy = [claim_next_job_racy.apply_async((f"w{i}", RACE_WINDOW), queue=wp.queue) for i in (1, 2)]
    assert [r.get(timeout=60) for r in racy] == [first.pk, first.pk]  # both "won" the first job
    assert Job.objects.get(pk=first.pk).claims == 2

    # The pattern takes no window to widen: the test is the other claimer, holding the first
    # job's row lock as a claim inside its transaction does. A claim meanwhile takes the
    # second job at once; without SKIP LOCKED it would wait for the lock, without FOR UPDATE
    # it would read the first job and its write would wait (both: this get() times out).
    Job.objects.update(status=Job.Status.PENDING, claims=0, claimed_by="")
    with row_locked(first):
        assert claim_next_job.apply_async(("w2",), queue=wp.queue).get(timeout=20) == second.pk
    assert claim_next_job.apply_async(("w1",), queue=wp.queue).get(timeout=20) == first.pk
    assert list(Job.objects.order_by("pk").values_list("claims", flat=True)) == [1, 1]
    assert len(set(Job.objects.values_list("claimed_by", flat=True))) == 2
    assert claim_next_job.apply_async(("w3",), queue=wp.queue).get(timeout=60) is None
    assert claim_next_job_racy("w3") is None  # nothing pending: both versions find nothing


@pytest.mark.services("postgres")
def test_a_claimer_skips_a_locked_job_instead_of_waiting_for_it(celery_worker):
    """(2) on the claim: a job another claimer's transaction holds is skipped at once, and the
    next one is claimed; the held job stays pending.

    Fails without `skip_locked=True`: the claim waits for the lock (here: past the timeout).
    Once the holder commits, PostgreSQL would then hand the waiter the next job as well, so the
    race test above cannot tell the two apart."""
    held, free = (Job.objects.create(title=t) for t in ("held", "free"))
    with row_locked(held):  # another claimer, between its SELECT ... FOR UPDATE and its commit
        assert claim_next_job.delay("w1").get(timeout=10) == free.pk
        assert waiting_on_locks() == 0
    assert Job.objects.get(pk=held.pk).status == Job.Status.PENDING


@pytest.mark.services("postgres")
@pytest.mark.antipattern(task=reserve_stock_racy)
def test_why_read_modify_write_oversells(worker_process):
    """One unit left, two concurrent reservations: read-modify-write sells it twice;
    the conditional UPDATE sells it once."""
    wp = worker_process(concurrency=2)
    item = StockItem.objects.create(sku="last-one", available=1)

    racy = [reserve_stock_racy.apply_async((item.pk, 1, RACE_WINDOW), queue=wp.queue)]
    racy.append(reserve_stock_racy.apply_async((item.pk, 1, RACE_WINDOW), queue=wp.queue))
    assert [r.get(timeout=60) for r in racy] == [True, True]  # two sold, one in stock
    assert StockItem.objects.get(pk=item.pk).available == 0  # and the count hides it

    StockItem.objects.filter(pk=item.pk).update(available=1)
    # Forced overlap: both reservations reach the row while another transaction holds it, as
    # the racy pair did (a read-modify-write would read 1 twice here and sell it twice).
    with row_locked(item):
        safe = [reserve_stock.apply_async((item.pk, 1), queue=wp.queue) for _ in range(2)]
        wait_until(lambda: waiting_on_locks() == 2, what="both reservations waiting on the row")
    assert sorted(r.get(timeout=60) for r in safe) == [False, True]
    assert StockItem.objects.get(pk=item.pk).available == 0
    assert reserve_stock_racy(item.pk, 1) is False  # alone, even the racy version refuses


def test_conditional_update_never_sells_what_is_not_there(celery_worker, caplog):
    """four reservations of 3 from 10: three succeed, 1 left; the refusal is logged."""
    item = StockItem.objects.create(sku="many", available=10)
    with caplog.at_level(logging.INFO, logger="snippets.orm"):
        results = [reserve_stock.delay(item.pk, 3) for _ in range(4)]
        assert [r.get(timeout=20) for r in results].count(True) == 3  # 3 x 3 fit in 10, not 4
    assert StockItem.objects.get(pk=item.pk).available == 1
    assert caplog.text.count(f"item {item.pk} has fewer than 3 left") == 1  # the refused one


@pytest.mark.services("postgres")
def test_the_worker_reconnects_for_every_task_whatever_conn_max_age_says(
    celery_worker, monkeypatch
):
    """Celery's Django fixup closes every connection before and after each task."""
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 600)
    pids = [database_session.delay().get(timeout=20) for _ in range(3)]
    assert len(set(pids)) == 3  # three tasks, three PostgreSQL sessions


@pytest.mark.services("postgres")
def test_db_reuse_max_keeps_the_connection_for_that_many_tasks():
    """CELERY_DB_REUSE_MAX, read by the fixup from the Django settings, spaces the closes."""
    app = Celery("reuse", set_as_current=False)
    app.config_from_object("snippets.django_integration.orm_patterns", namespace="CELERY")
    fixup = DjangoWorkerFixup(app)
    assert fixup.db_reuse_max == 50

    def run_task() -> int:  # what the worker does around each task
        fixup.close_database()  # task_prerun
        pid = database_session()
        fixup.close_database()  # task_postrun
        return pid

    pids = [run_task() for _ in range(51)]
    assert len(set(pids[:50])) == 1  # fifty tasks on one connection
    assert pids[50] != pids[0]  # then a fresh one


@pytest.mark.proves_idempotent(task=archive_report)
def test_a_report_archived_again_keeps_one_prefix(shared_prefork_worker):
    """The same message delivered again (same task id, as the broker hands back an unacked one)
    finds the report archived and leaves it.

    Fails without the `startswith` check: the title would read "[archived] [archived] Q4"."""
    wp = shared_prefork_worker
    report = Report.objects.create(title="Q4")
    first = archive_report.apply_async((report.pk,), queue=wp.queue)
    assert first.get(timeout=30) is True
    assert deliver_again(wp, archive_report, (report.pk,), first.id) is True
    assert Report.objects.get(pk=report.pk).title == "[archived] Q4"


@pytest.mark.services("postgres")
@pytest.mark.proves_idempotent(task=claim_next_job)
def test_a_claim_delivered_again_gets_the_job_it_claimed(shared_prefork_worker):
    """The claim's message delivered again (its worker lost after the commit, before the ack)
    returns the job that message claimed; the next job stays pending for the next claim.

    Fails without the `claim_id` lookup: the rerun would claim the second job as well, and the
    first would stay RUNNING with nobody working on it."""
    wp = shared_prefork_worker
    first_job, second_job = (Job.objects.create(title=t) for t in ("first", "second"))
    first = claim_next_job.apply_async(("w1",), queue=wp.queue)
    assert first.get(timeout=30) == first_job.pk
    assert deliver_again(wp, claim_next_job, ("w1",), first.id) == first_job.pk
    jobs = Job.objects.order_by("pk").values_list("status", "claims", "claim_id")
    assert list(jobs) == [("running", 1, first.id), ("pending", 0, "")]
    assert claim_next_job.apply_async(("w2",), queue=wp.queue).get(timeout=30) == second_job.pk


@pytest.mark.proves_idempotent(task=reserve_stock)
def test_a_reservation_delivered_again_reserves_once(shared_prefork_worker):
    """The reservation's message delivered again finds its Reservation row (unique task id,
    committed with the decrement) and answers as before: 10 - 3 = 7, not 4. A refused one stays
    refused.

    Fails without the lookup: the rerun's insert hits the unique task id and the redelivery
    fails (IntegrityError; its decrement rolled back); without the unique constraint too, it
    would reserve twice (4 left)."""
    wp = shared_prefork_worker
    item = StockItem.objects.create(sku="redelivered", available=10)
    first = reserve_stock.apply_async((item.pk, 3), queue=wp.queue)
    assert first.get(timeout=30) is True
    assert deliver_again(wp, reserve_stock, (item.pk, 3), first.id) is True
    assert StockItem.objects.get(pk=item.pk).available == 7
    assert Reservation.objects.get(task_id=first.id).granted is True

    refused = reserve_stock.apply_async((item.pk, 8), queue=wp.queue)
    assert refused.get(timeout=30) is False
    assert deliver_again(wp, reserve_stock, (item.pk, 8), refused.id) is False
    assert StockItem.objects.get(pk=item.pk).available == 7
    assert Reservation.objects.count() == 2


@pytest.mark.services("postgres")
@pytest.mark.proves_idempotent(task=database_session)
def test_a_session_probe_delivered_again_opens_a_fresh_session(shared_prefork_worker):
    """The probe only reads: delivered again it writes nothing and answers with a new
    PostgreSQL session, as every task does on a `celery worker` (the fixup closes the
    connection around each task).

    Fails if a run kept its connection for the next (the same pid twice), or if the probe wrote
    anything."""
    wp = shared_prefork_worker
    first = database_session.apply_async(queue=wp.queue)
    pid = first.get(timeout=30)
    again = deliver_again(wp, database_session, (), first.id)
    assert isinstance(pid, int)
    assert isinstance(again, int)
    assert again != pid
    assert not Job.objects.exists()
    assert not Report.objects.exists()
