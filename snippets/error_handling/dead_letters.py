"""Dead letters: park what cannot succeed, keep it, and replay it once the cause is fixed."""

# --8<-- [start:work]
from snippets.error_handling.models import ImportRow


def parse_row(data: dict) -> tuple[str, int]:
    """A row is a SKU and a whole quantity; anything else cannot be imported as it is."""
    sku, qty = data.get("sku"), data.get("qty")
    if not isinstance(sku, str) or not isinstance(qty, int):
        raise ValueError(f"malformed row: {data!r}")
    return sku, qty


def import_one(row_id: int) -> int:
    """Import one row, once: a redelivered or twice-replayed message finds it imported."""
    from django.db.models import F

    row = ImportRow.objects.get(pk=row_id)
    parse_row(row.data)
    ImportRow.objects.filter(pk=row_id, imported_count=0).update(  # (1)!
        imported_count=F("imported_count") + 1
    )
    return row_id


# --8<-- [end:work]


# --8<-- [start:queues]
from typing import Any

from celery.signals import worker_init
from kombu import Exchange, Queue


def dead_letter_queue(work: Queue) -> Queue:
    """The queue that keeps what `work` rejects, named by its dead-letter arguments."""
    arguments = work.queue_arguments or {}
    name = arguments["x-dead-letter-routing-key"]
    return Queue(name, Exchange(arguments["x-dead-letter-exchange"], type="direct"), name)


@worker_init.connect  # (1)!
def declare_dead_letter_queues(sender: Any, **_kwargs: Any) -> None:
    """Before a worker consumes: declare the dead-letter queue of each queue that has one."""
    app = sender.app
    dead = [
        dead_letter_queue(queue)
        for queue in app.amqp.queues.values()
        if "x-dead-letter-exchange" in (queue.queue_arguments or {})
    ]
    if dead:
        with app.connection_for_write() as conn:
            for queue in dead:
                queue.bind(conn.default_channel).declare()


# --8<-- [end:queues]


# --8<-- [start:reject]
from celery import shared_task
from celery.exceptions import Reject


@shared_task(acks_late=True)  # (1)!
def import_row(row_id: int) -> int:
    """Import a row; a malformed one is rejected to the dead-letter queue, not retried."""
    try:
        return import_one(row_id)
    except ValueError as exc:
        raise Reject(exc, requeue=False) from exc  # (2)!


# --8<-- [end:reject]


# --8<-- [start:failure_table]
from billiard.einfo import ExceptionInfo
from celery.contrib.django.task import DjangoTask

from snippets.error_handling.models import FailedTask


class RecordFailures(DjangoTask):
    """Base task: a failure is kept as a FailedTask row, with what is needed to send it again."""

    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: tuple | list,
        kwargs: dict[str, Any],
        einfo: ExceptionInfo | None,
    ) -> None:
        FailedTask.objects.update_or_create(
            task_id=task_id,  # a task that fails again after a replay is parked again
            defaults={
                "task_name": self.name,
                "args": list(args),
                "kwargs": kwargs,
                "exception": repr(exc),
                "replayed_at": None,
            },
        )


@shared_task(base=RecordFailures)
def import_row_recorded(row_id: int) -> int:
    """Import a row; a malformed one fails, and its failure is kept in the database."""
    return import_one(row_id)


# --8<-- [end:failure_table]


# --8<-- [start:replay]
from celery import Celery
from django.db import transaction
from django.utils import timezone


def replay_dead_letters(app: Celery, queue: str, limit: int = 1000) -> int:
    """RabbitMQ: move up to `limit` messages from `<queue>.dead` back to `queue`."""
    work = app.amqp.queues.get(queue)  # as CELERY_TASK_QUEUES declares it
    if work is None or "x-dead-letter-routing-key" not in (work.queue_arguments or {}):
        raise ValueError(f"CELERY_TASK_QUEUES gives {queue!r} no dead-letter queue")
    dead = dead_letter_queue(work)
    moved = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        dead_queue = dead.bind(channel)
        dead_queue.declare()
        producer = conn.Producer(channel)
        while moved < limit and (message := dead_queue.get(no_ack=False)) is not None:
            headers = {  # drop RabbitMQ's death records: the replay starts afresh
                k: v
                for k, v in message.headers.items()
                if not k.startswith(("x-death", "x-first-death", "x-last-death"))
            }
            producer.publish(
                message.body,
                exchange=work.exchange,
                routing_key=work.routing_key,
                headers=headers,
                declare=[work],  # a work queue deleted since is declared again, not missed
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                **{k: message.properties[k] for k in ("correlation_id", "reply_to", "priority")
                   if k in message.properties},
            )  # fmt: skip
            message.ack()  # (1)!
            moved += 1
    return moved


def replay_failed_tasks(app: Celery, limit: int = 1000) -> int:
    """Redis (any broker): send each FailedTask not yet replayed again, once."""
    replayed = 0
    for failed in FailedTask.objects.filter(replayed_at__isnull=True).order_by("pk")[:limit]:
        with transaction.atomic():
            claimed = FailedTask.objects.filter(pk=failed.pk, replayed_at__isnull=True).update(
                replayed_at=timezone.now()
            )  # (2)!
            if claimed:
                app.send_task(
                    failed.task_name, failed.args, failed.kwargs, task_id=failed.task_id
                )  # (3)!
                replayed += 1
    return replayed


# --8<-- [end:replay]
