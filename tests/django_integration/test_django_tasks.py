"""Proof for docs/django-integration/django-tasks.md: django.tasks (Django 6.0+) beside Celery.

Tests marked ``django6`` are deselected, with a printed note, on Django 5.2
(tests/django_integration/conftest.py); the Celery side runs on both.
"""

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import django
import pytest
from django.db import transaction
from django.dispatch import Signal
from django.test import override_settings

from snippets.django_integration import django_tasks as page
from snippets.django_integration.django_tasks import publish_report_celery
from snippets.django_integration.models import Report
from tests.harness.db import Rollback
from tests.harness.redelivery import deliver_again

if django.VERSION >= (6, 0):
    from django.tasks import TaskResultStatus, task_backends
    from django.tasks.backends.dummy import DummyBackend
    from django.tasks.exceptions import InvalidTask
    from django.tasks.signals import task_started

pytestmark = pytest.mark.django_db(transaction=True)
django6 = pytest.mark.django6
# A TASKS setting whose default backend queues instead of running: DummyBackend stores.
QUEUEING = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}


@contextlib.contextmanager
def recording(signal: Signal) -> Iterator[list[tuple[object, int]]]:
    """Every `signal` sent inside the block: its task result and the thread that sent it."""
    sent: list[tuple[object, int]] = []

    def record(sender: object, task_result: object, **_kwargs: object) -> None:
        sent.append((task_result, threading.get_ident()))

    signal.connect(record)
    try:
        yield sent
    finally:
        signal.disconnect(record)


if django.VERSION >= (6, 0):
    from django.tasks import task

    @task
    async def double(n: int) -> int:
        """A coroutine function as a django.tasks task (module level, as django.tasks requires)."""
        await asyncio.sleep(0)
        return 2 * n


def test_the_celery_front_door_runs_the_shared_body_on_a_worker(celery_worker):
    """The Celery task that wraps the shared body runs it on the in-thread worker."""
    report = Report.objects.create(title="celery")
    assert page.publish_report_celery.delay(report.pk).get(timeout=20) == "celery"
    assert Report.objects.get(pk=report.pk).render_count == 1


@pytest.mark.proves_idempotent(task=publish_report_celery)
def test_the_celery_front_door_delivered_again_publishes_once(shared_prefork_worker):
    """The same message delivered again to a `celery worker` (same task id): the shared body
    finds the report published and changes nothing.

    Fails without `rendered_at=None` in the body's UPDATE: render_count 2."""
    wp = shared_prefork_worker
    report = Report.objects.create(title="once")
    first = publish_report_celery.apply_async((report.pk,), queue=wp.queue)
    assert first.get(timeout=30) == "once"
    assert deliver_again(wp, publish_report_celery, (report.pk,), first.id) == "once"
    assert Report.objects.get(pk=report.pk).render_count == 1


@django6
def test_the_default_backend_runs_the_task_inline_at_enqueue():
    """Django's default TASKS backend (ImmediateBackend, `django/conf/global_settings.py`) runs
    the task in the caller's thread, before `enqueue()` returns: no queue, no worker, no
    process. Fails on any backend that runs it later or elsewhere (DummyBackend: never)."""
    report = Report.objects.create(title="django")
    with recording(task_started) as started:
        result = page.publish_report_task.enqueue(report.pk)
    assert [thread for _, thread in started] == [threading.get_ident()]  # this thread
    assert result.status == TaskResultStatus.SUCCESSFUL  # already done when enqueue returns
    assert result.return_value == "django"
    assert Report.objects.get(pk=report.pk).render_count == 1


@django6
def test_enqueue_on_commit_waits_for_the_commit():
    """nothing runs on rollback; one run on commit."""
    with pytest.raises(Rollback), transaction.atomic():
        page.create_and_publish("rolled back")
        raise Rollback
    assert not Report.objects.exists()
    report = page.create_and_publish("committed")
    assert Report.objects.get(pk=report.pk).render_count == 1


@django6
def test_a_queue_backend_keeps_a_task_enqueued_in_a_rolled_back_block():
    """No `enqueue_on_commit`: `enqueue()` is not tied to the transaction. On a backend that
    queues (DummyBackend stores, as a broker would), a rolled-back block leaves its task queued
    for a row that is gone; `create_and_publish()` queues nothing then, and one task on commit."""
    with override_settings(TASKS=QUEUEING):
        queued = task_backends["default"]
        with pytest.raises(Rollback), transaction.atomic():
            report = page.create_and_publish_too_early("ghost")  # the anti-pattern, queued
            raise Rollback
        assert [r.args for r in queued.results] == [[report.pk]]  # queued, row gone
        assert not Report.objects.exists()
        queued.clear()

        with pytest.raises(Rollback), transaction.atomic():
            page.create_and_publish("rolled back")
            raise Rollback
        assert queued.results == []
        committed = page.create_and_publish("committed")
        assert [r.args for r in queued.results] == [[committed.pk]]


@django6
@pytest.mark.antipattern("snippets/django_integration/django_tasks.py:antipattern")
def test_why_enqueue_inside_a_transaction_runs_for_a_row_that_is_rolled_back():
    """ImmediateBackend runs the task inside the caller's transaction, like task_always_eager."""
    ran: list[str] = []
    from django.tasks.signals import task_finished

    def record(sender, task_result, **_kwargs):
        ran.append(task_result.return_value)

    task_finished.connect(record)
    try:
        with pytest.raises(Rollback), transaction.atomic():
            page.create_and_publish_too_early("ghost")
            raise Rollback
    finally:
        task_finished.disconnect(record)
    assert ran == ["ghost"]  # the task ran, and succeeded ...
    assert not Report.objects.exists()  # ... for a row that never existed


@django6
def test_the_dummy_backend_stores_tasks_and_never_runs_them():
    """`READY`, stored, nothing done."""
    backend = DummyBackend(alias="dummy", params={})
    report = Report.objects.create(title="dummy")
    result = backend.enqueue(page.publish_report_task, [report.pk], {})
    assert result.status == TaskResultStatus.READY
    assert [r.args for r in backend.results] == [[report.pk]]
    assert Report.objects.get(pk=report.pk).render_count == 0  # nothing ran it


@django6
def test_a_failure_is_recorded_once_and_not_retried():
    """`FAILED`, one attempt, the exception path."""
    with recording(task_started) as started:
        result = page.publish_report_task.enqueue(987654)
    assert result.status == TaskResultStatus.FAILED
    assert len(started) == 1  # the body ran once: nothing retried it
    assert result.attempts == 1  # no retry policy exists to ask for more
    [error] = result.errors
    assert error.exception_class_path == "snippets.django_integration.models.Report.DoesNotExist"
    assert "Report matching query does not exist" in error.traceback
    # A nested exception class (every Model.DoesNotExist) cannot be imported back from its path:
    with pytest.raises(ImportError):
        error.exception_class  # noqa: B018


@django6
def test_arguments_are_json_round_tripped_and_instances_refused():
    """tuple → list; `TypeError`."""
    report = Report.objects.create(title="json")
    result = DummyBackend(alias="dummy", params={}).enqueue(
        page.publish_report_task, (report.pk,), {}
    )
    assert result.args == [report.pk]  # a tuple comes back a list
    with pytest.raises(TypeError, match="Unsupported type"):
        page.publish_report_task.enqueue(report)


@django6
def test_run_after_is_refused_inline_and_kept_by_a_backend_that_defers():
    """The table's `run_after` row: the API exists; ImmediateBackend refuses it (`InvalidTask`,
    it cannot wait), a backend that supports deferral stores the task with its time, unrun."""
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(minutes=5)
    with pytest.raises(InvalidTask, match="run_after"):
        page.publish_report_task.using(run_after=later)
    report = Report.objects.create(title="later")
    with override_settings(TASKS=QUEUEING):
        result = page.publish_report_task.using(run_after=later).enqueue(report.pk)
        assert (result.status, result.task.run_after) == (TaskResultStatus.READY, later)
    assert Report.objects.get(pk=report.pk).render_count == 0  # nothing ran it


@django6
def test_an_async_def_task_runs_on_the_default_backend_and_is_refused_without_support():
    """The table's `async def` row: ImmediateBackend awaits the coroutine; a backend whose
    `supports_async_task` is False refuses the task."""
    result = double.enqueue(21)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42

    class SyncOnlyBackend(DummyBackend):
        supports_async_task = False

    with pytest.raises(InvalidTask, match="async"):
        SyncOnlyBackend(alias="sync-only", params={}).validate_task(double)
