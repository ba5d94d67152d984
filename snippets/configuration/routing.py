"""Routing: slow work on its own queue, served by its own workers; and noticing a queue nobody
consumes."""

# --8<-- [start:tasks]
import time

from celery import shared_task

TRANSCODE_SECONDS = 2.0  # how long the stand-in works: minutes in real life


@shared_task
def transcode_video(video_id: int) -> int:
    """Slow, CPU-heavy work. A stand-in: it sleeps TRANSCODE_SECONDS."""
    time.sleep(TRANSCODE_SECONDS)
    return video_id


@shared_task
def send_receipt(order_id: int) -> int:
    """Fast work a user is waiting for."""
    return order_id


# --8<-- [end:tasks]


# --8<-- [start:routes]
CELERY_TASK_ROUTES = {
    "snippets.configuration.routing.transcode_video": {"queue": "media"},  # (1)!
}
# --8<-- [end:routes]


# --8<-- [start:stranded]
from celery import Celery


def stranded_queues(app: Celery, timeout: float = 2.0) -> dict[str, int]:
    """Queues that tasks are routed to but no running worker consumes, with their backlog."""
    routed = set()
    for task_name in app.tasks:  # (1)!
        queue = app.amqp.router.route({}, task_name).get("queue")
        if queue is not None:  # None: routed to an exchange, not to a named queue
            routed.add(getattr(queue, "name", queue))
    replies = app.control.inspect(timeout=timeout).active_queues() or {}  # (2)!
    consumed = {queue["name"] for queues in replies.values() for queue in queues}
    backlog: dict[str, int] = {}
    with app.connection_for_read() as conn:
        for name in sorted(routed - consumed):
            try:
                with conn.channel() as channel:  # (3)!
                    backlog[name] = channel.queue_declare(name, passive=True).message_count
            except conn.channel_errors:
                backlog[name] = 0  # not declared yet: nothing was ever sent there
    return backlog


# --8<-- [end:stranded]
