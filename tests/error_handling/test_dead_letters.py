"""Proof for docs/error-handling/dead-letters.md: park, keep, fix, replay once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from celery import Celery
from django.core.management import call_command

from snippets.error_handling.dead_letters import (
    dead_letter_queue,
    import_row,
    import_row_recorded,
    replay_dead_letters,
    replay_failed_tasks,
)
from snippets.error_handling.models import FailedTask, ImportRow
from tests.configuration.helpers import settings_env
from tests.harness.celery import consumed_queues
from tests.harness.redelivery import redeliver
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


SETTINGS = "snippets.error_handling.dead_letters_settings"  # the page's settings block


def page_app(amqp_url: str, **overrides: object) -> Celery:
    """A project configured from the page's settings module (+ overrides), on RabbitMQ.

    (Celery reads the CELERY_BROKER_URL environment variable before any setting: the broker is
    set with broker_read/write_url, which win over it.)
    """
    app = Celery("snippets", set_as_current=False)
    app.config_from_object(SETTINGS, namespace="CELERY")
    app.conf.update(overrides)
    app.conf.broker_read_url = app.conf.broker_write_url = amqp_url
    return app


def plain_worker_queues(app: Celery) -> str:
    """The queues a worker of `app` started without -Q consumes, as Celery selects them: every
    declared queue when nothing is selected (celery/app/amqp.py, Queues.consume_from)."""
    return ",".join(sorted(app.amqp.queues.consume_from))


@contextlib.contextmanager
def worker_as_the_page_starts_it(worker_process, app: Celery, amqp_url: str) -> Iterator:
    """A `celery worker` of the page's settings module (DJANGO_SETTINGS_MODULE), consuming what
    a worker without -Q would: the harness always passes --queues, so it gets exactly the set
    Celery selects with none (plain_worker_queues), computed from the same settings.

    (Not in-thread: Celery's start_worker() stops its worker through the process-wide
    celery.worker.state.should_terminate, which also stops the session's in-thread worker.)
    """
    with app.connection_for_write() as conn:  # it consumes `celery` too: no leftovers
        purge = conn.channel()
        with contextlib.suppress(*conn.channel_errors):
            purge.queue_purge("celery")
    env = {**settings_env(base=SETTINGS), "CELERY_BROKER_URL": amqp_url}
    wp = worker_process(env=env, queue=plain_worker_queues(app), ready=False)
    try:
        wait_until(
            lambda: consumed_queues(app, wp.hostname), what="the worker consuming", context=wp
        )
        yield wp
    finally:
        wp.stop()
        with app.connection_for_write() as conn:  # the shared vhost as it was found
            for queue in ("imports", "imports.dead"):
                with contextlib.suppress(Exception), conn.channel() as channel:
                    channel.queue_delete(queue)
            for exchange in ("imports", "dead-letters", "imports.dead"):
                with contextlib.suppress(Exception), conn.channel() as channel:
                    channel.exchange_delete(exchange)


def consumers(app: Celery, name: str) -> int:
    """RabbitMQ's own count of the consumers of queue `name`."""
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(name, passive=True).consumer_count


def dead_messages(app: Celery) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare("imports.dead", passive=True).message_count


@pytest.fixture
def rabbit(amqp_url, worker_process) -> Iterator[tuple[Celery, object]]:
    """The page's settings on RabbitMQ, and a worker consuming what they make it consume."""
    app = page_app(amqp_url)
    with worker_as_the_page_starts_it(worker_process, app, amqp_url) as worker:
        yield app, worker


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.error_handling.dead_letters_settings)",
    reason="the page's queue settings, whose consumption is under test",
)
def test_a_worker_started_without_queues_consumes_the_work_not_the_dead_letters(rabbit):
    app, worker = rabbit
    assert plain_worker_queues(app) == "celery,imports"  # the default queue too
    assert consumed_queues(app, worker.hostname) == {"celery", "imports"}
    assert consumers(app, "imports.dead") == 0  # declared by the worker, consumed by nobody


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.error_handling.dead_letters_settings)",
    reason="the page's queue settings, whose dead-lettering is under test",
)
def test_a_rejected_message_lands_in_the_dead_letter_queue_and_replays_once(rabbit):
    app, worker = rabbit
    row = ImportRow.objects.create(data=MALFORMED)
    result = app.send_task(import_row.name, (row.pk,), headers={"x_request_id": "req-dlx"})

    wait_until(lambda: dead_messages(app) == 1, what="the dead letter")
    with app.connection_for_write() as conn:
        message = dead_letter_queue(app.amqp.queues["imports"]).bind(conn.default_channel)
        message = message.get(no_ack=False)
        headers = message.headers
        message.requeue()  # only looking: it stays in the dead-letter queue
    assert headers["task"] == import_row.name
    assert headers["id"] == result.id
    assert headers["x_request_id"] == "req-dlx"  # the message kept its own headers
    [death] = headers["x-death"]  # and RabbitMQ recorded why and where it died
    assert (death["reason"], death["queue"]) == ("rejected", "imports")
    assert result.state == "FAILURE"  # Celery 5.7 records a Reject(requeue=False) as a failure
    assert imported(row) == 0
    # ...and sends task_failure (from the worker, without the task's request): the failure
    # log has the arguments, from the signal, but not the correlation id.
    log = worker.wait_for_log(f"import_row[{result.id}] failed: reject requeue=False")
    assert f"(args=({row.pk},), retries=None, correlation_id=None)" in log

    ImportRow.objects.filter(pk=row.pk).update(data=FIXED)  # the fix
    assert replay_dead_letters(app, "imports") == 1
    assert succeeded(result) == row.pk  # the same task id, now a success
    assert dead_messages(app) == 0
    assert imported(row) == 1
    # A later message on the same queue, run by the same one-child worker: once it has run,
    # so has any second copy the replay published before it. Then count the runs.
    later = app.send_task(import_row.name, (ImportRow.objects.create(data=FIXED).pk,))
    assert succeeded(later)
    ran = f"{import_row.name}[{result.id}] succeeded"
    assert worker.log().count(ran) == 1  # ran exactly once
    assert replay_dead_letters(app, "imports") == 0  # nothing left to send twice


@pytest.mark.services("rabbitmq")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.error_handling.dead_letters_settings)",
    reason="the page's settings with the anti-pattern's queue list",
)
def test_why_a_worker_that_consumes_the_dead_letter_queue_destroys_the_dead_letters(
    amqp_url, worker_process
):
    """task_queues replaces Celery's default queue list (celery/app/amqp.py, Queues): with both
    queues in it, every plain worker consumes `imports.dead` and no longer `celery`."""
    work = page_app(amqp_url).conf.task_queues[1]
    app = page_app(amqp_url, task_queues=[work, dead_letter_queue(work)])
    assert plain_worker_queues(app) == "imports,imports.dead"  # and not celery
    with worker_as_the_page_starts_it(worker_process, app, amqp_url) as worker:
        row = ImportRow.objects.create(data=MALFORMED)
        result = app.send_task(import_row.name, (row.pk,))
        # Both runs ended, not only received: the fix below must come after the second run
        # read the row (a fix made while that run was on its way let it import the row: seen
        # once on RabbitMQ).
        rejected = f"import_row[{result.id}] reject requeue=False"  # LOG_REJECTED, once a run
        wait_until(
            lambda: worker.log().count(rejected) == 2,
            what="the dead letter run again, and rejected",
            context=worker,
        )
        assert dead_messages(app) == 0  # rejected from the dead-letter queue: deleted
        ImportRow.objects.filter(pk=row.pk).update(data=FIXED)
        assert replay_dead_letters(app, "imports") == 0  # nothing left to replay
        assert imported(row) == 0  # the import is lost for good


def test_a_failure_is_kept_in_the_table_and_replays_once(celery_worker, published):
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
    assert [p["id"] for p in published].count(result.id) == 2  # the call and one replay


@pytest.mark.services("broker")
@pytest.mark.proves_idempotent(task=import_row)
@pytest.mark.proves_idempotent(task=import_row_recorded)
def test_a_row_delivered_twice_is_imported_once(shared_prefork_worker):
    """Each task's message delivered again with the same id, on a real worker (a redelivery
    after a lost worker, a dead letter replayed twice): the second run imports nothing. Without
    the `imported_count=0` condition in import_one, the second run counts 2."""
    wp = shared_prefork_worker  # the deployment as is, and every run is waited for: shareable
    for task in (import_row, import_row_recorded):
        row = ImportRow.objects.create(data=FIXED)
        first = task.apply_async((row.pk,), queue=wp.queue)
        assert first.get(timeout=30) == row.pk
        again = redeliver(wp, task, first, (row.pk,))
        assert (again["status"], again["result"]) == ("SUCCESS", row.pk)
        assert imported(row) == 1
    assert FailedTask.objects.count() == 0


def test_a_replay_that_fails_again_is_parked_again(celery_worker):
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
    with pytest.raises(ValueError, match="no dead-letter queue"):  # ...no dead-letter queue...
        call_command("replay_dead_letters", queue="celery")
    call_command("replay_dead_letters")  # ...and an empty table
    assert imported(row) == 0  # the import is lost for good


@pytest.mark.services("rabbitmq")
def test_a_replay_keeps_the_properties_a_waiter_needs(amqp_url):
    """The replay re-publishes the dead letter's correlation_id and reply_to (where the rpc
    result backend sends the result, celery/app/amqp.py as_task_v2) and its priority, not only
    its body and headers. No worker: the message is rejected by hand, as a worker would."""
    app = page_app(amqp_url)
    work = app.amqp.queues["imports"]
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in (work, dead_letter_queue(work)):
                queue.bind(channel).declare()
        result = app.send_task(import_row.name, (1,), reply_to="the-waiter", priority=3)
        with app.connection_for_write() as conn:
            message = wait_until(lambda: work.bind(conn.default_channel).get(no_ack=False))
            message.reject(requeue=False)  # RabbitMQ dead-letters it to imports.dead
        wait_until(lambda: dead_messages(app) == 1, what="the dead letter")

        assert replay_dead_letters(app, "imports") == 1
        with app.connection_for_write() as conn:
            replayed = wait_until(lambda: work.bind(conn.default_channel).get(no_ack=True))
        assert replayed.headers["id"] == result.id
        assert "x-death" not in replayed.headers  # the replay starts afresh
        assert replayed.properties["correlation_id"] == result.id
        assert replayed.properties["reply_to"] == "the-waiter"
        assert replayed.properties["priority"] == 3
    finally:
        with app.connection_for_write() as conn:  # the shared vhost as it was found
            for queue in ("imports", "imports.dead"):
                with contextlib.suppress(Exception), conn.channel() as channel:
                    channel.queue_delete(queue)
            for exchange in ("imports", "dead-letters"):
                with contextlib.suppress(Exception), conn.channel() as channel:
                    channel.exchange_delete(exchange)
