"""Proof for docs/error-handling/dead-letters.md: park, keep, fix, replay once."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from django.core.management import call_command

from snippets.error_handling.dead_letters import (
    dead_letter_app,
    dead_lettered,
    import_row,
    import_row_recorded,
    replay_dead_letters,
    replay_failed_tasks,
)
from snippets.error_handling.models import FailedTask, ImportRow
from tests.harness.celery import wait_ping
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

MALFORMED = {"sku": "A-1", "qty": "three"}
FIXED = {"sku": "A-1", "qty": 3}


def succeeded(result) -> object:
    """Wait for the replayed run: the old FAILURE stays stored until the replay overwrites it.

    (cache=False: a backend keeps a task's first final state, here the FAILURE, in memory.)
    """

    def meta() -> dict | None:
        found = result.backend.get_task_meta(result.id, cache=False)
        return found if found["status"] == "SUCCESS" else None

    return wait_until(meta, what=f"{result.id} to succeed")["result"]


def imported(row: ImportRow) -> int:
    row.refresh_from_db()
    return row.imported_count


@pytest.fixture
def rabbit(amqp_url, worker_process):
    """A worker on RabbitMQ consuming a fresh dead-lettered queue; the queues go afterwards."""
    name = f"imports-{uuid.uuid4().hex[:8]}"
    app = dead_letter_app(amqp_url, name)
    with app.connection_for_write() as conn:
        for queue in dead_lettered(name):  # declared once, as a deployment would
            queue.bind(conn.default_channel).declare()
    wp = worker_process(
        app="tests.error_handling.dlx_worker",
        queue=name,
        env={"CELERY_BROKER_URL": amqp_url, "DEAD_LETTER_TEST_QUEUE": name},
        ready=False,
    )
    wait_ping(app, wp.hostname, proc=wp)
    yield app, name, wp
    with app.connection_for_write() as conn:
        for queue in dead_lettered(name):
            with contextlib.suppress(Exception):
                queue.bind(conn.default_channel).delete()


def dead_messages(app, name: str) -> int:
    with app.connection_for_write() as conn:
        return dead_lettered(name)[1].bind(conn.default_channel).queue_declare(passive=True)[1]


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "-A tests.error_handling.dlx_worker",
    reason="an app whose queues are the page's dead-lettered pair",
)
@pytest.mark.deviation("DEAD_LETTER_TEST_QUEUE", reason="that pair's name, private to the test")
def test_a_rejected_message_lands_in_the_dead_letter_queue_and_replays_once(rabbit):
    """RabbitMQ, a real prefork worker on a queue with a dead-letter exchange: the rejected message
    lands in `<queue>.dead` with its headers and `x-death`, and the replay runs it once."""
    app, name, wp = rabbit
    row = ImportRow.objects.create(data=MALFORMED)
    result = app.send_task(import_row.name, (row.pk,), headers={"x_request_id": "req-dlx"})

    wait_until(lambda: dead_messages(app, name) == 1, what="the dead letter")
    with app.connection_for_write() as conn:
        message = dead_lettered(name)[1].bind(conn.default_channel).get(no_ack=False)
        headers = message.headers
        message.requeue()  # only looking: it stays in the dead-letter queue
    assert headers["task"] == import_row.name
    assert headers["id"] == result.id
    assert headers["x_request_id"] == "req-dlx"  # the message kept its own headers
    [death] = headers["x-death"]  # and RabbitMQ recorded why and where it died
    assert (death["reason"], death["queue"]) == ("rejected", name)
    assert result.state == "FAILURE"  # Celery 5.7 records a Reject(requeue=False) as a failure
    assert imported(row) == 0
    # ...and sends task_failure (from the main process, without the task's request): the
    # failure log has the arguments, from the signal, but not the correlation id.
    log = wp.wait_for_log(f"import_row[{result.id}] failed: reject requeue=False")
    assert f"(args=({row.pk},), retries=0, correlation_id=None)" in log

    ImportRow.objects.filter(pk=row.pk).update(data=FIXED)  # the fix
    assert replay_dead_letters(app, name) == 1
    assert succeeded(result) == row.pk  # the same task id, now a success
    assert dead_messages(app, name) == 0
    assert imported(row) == 1  # ran exactly once
    assert replay_dead_letters(app, name) == 0  # nothing left to send twice


def test_a_failure_is_kept_in_the_table_and_replays_once(celery_worker):
    """Redis has no dead-letter exchange: the failure handler keeps the task in a table."""
    row = ImportRow.objects.create(data=MALFORMED)
    result = import_row_recorded.delay(row.pk)
    with pytest.raises(ValueError, match="malformed row"):
        result.get(timeout=30)

    failed = wait_until(lambda: FailedTask.objects.filter(task_id=result.id).first())
    assert (failed.task_name, failed.args, failed.kwargs) == (
        import_row_recorded.name,
        [row.pk],
        {},
    )
    assert "malformed row" in failed.exception
    assert failed.replayed_at is None

    ImportRow.objects.filter(pk=row.pk).update(data=FIXED)  # the fix
    call_command("replay_dead_letters")
    assert succeeded(result) == row.pk
    assert imported(row) == 1
    failed.refresh_from_db()
    assert failed.replayed_at is not None
    assert replay_failed_tasks(import_row_recorded.app) == 0  # claimed once: never sent twice
    assert imported(row) == 1


def test_a_replay_that_fails_again_is_parked_again(celery_worker):
    """replayed without the fix: one row again, waiting."""
    row = ImportRow.objects.create(data=MALFORMED)
    result = import_row_recorded.delay(row.pk)
    with pytest.raises(ValueError, match="malformed row"):
        result.get(timeout=30)
    wait_until(lambda: FailedTask.objects.filter(task_id=result.id).exists())

    assert replay_failed_tasks(import_row_recorded.app) == 1  # replayed without the fix
    wait_until(
        lambda: FailedTask.objects.filter(task_id=result.id, replayed_at__isnull=True).exists(),
        what="the failure parked again",
    )
    assert FailedTask.objects.count() == 1
    assert imported(row) == 0


@pytest.mark.antipattern("snippets/error_handling/dead_letters.py:queues")
def test_why_reject_without_a_dead_letter_exchange_loses_the_message(celery_worker):
    """On a queue with no dead-letter exchange (any Redis queue), Reject(requeue=False) deletes."""
    row = ImportRow.objects.create(data=MALFORMED)
    result = import_row.delay(row.pk)  # the default queue: no x-dead-letter-exchange
    wait_until(lambda: result.state == "FAILURE", what="the rejection")

    ImportRow.objects.filter(pk=row.pk).update(data=FIXED)
    assert FailedTask.objects.count() == 0  # nothing kept...
    call_command("replay_dead_letters", queue="celery")  # ...and no dead-letter queue to read
    call_command("replay_dead_letters")
    assert imported(row) == 0  # the import is lost for good
