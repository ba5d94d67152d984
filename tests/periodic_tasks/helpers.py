"""Helpers of the periodic-tasks proofs: schedules in the JSON form beat_settings reads, and
the queues the beats publish to."""

from __future__ import annotations

from kombu import Exchange, Queue

from tests.harness import celery as harness
from tests.harness.celery import confirmed_sends

__all__ = ["confirmed_sends", "every_second", "queue_length", "read_queue"]


def every_second(task, queue: str, entry: str, **options) -> dict:
    return {
        entry: {
            "task": task.name,
            "seconds": 1,
            "args": [entry],
            "options": {"queue": queue, **options},
        }
    }


def read_queue(name: str) -> list[dict]:
    """Take every message out of a queue: the task name, id, args and expiry of each."""
    from snippets.project.celery import app

    messages = []
    with app.connection_for_write() as conn:
        bound = Queue(name, Exchange(name), routing_key=name)(conn.default_channel)
        bound.declare()
        while (message := bound.get(no_ack=True)) is not None:
            headers = message.headers
            messages.append(
                {
                    "task": headers["task"],
                    "id": headers["id"],
                    "expires": headers.get("expires"),
                    "args": message.decode()[0],
                }
            )
    return messages


def queue_length(name: str) -> int:
    """Messages ready in a queue of the project's broker."""
    from snippets.project.celery import app

    return harness.queue_length(app, name)
