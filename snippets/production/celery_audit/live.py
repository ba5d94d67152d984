"""`--live`: ask the running broker and workers (read only: nothing is published or consumed)."""

from __future__ import annotations

from collections.abc import Iterator

from .checks import route_table
from .findings import ERROR, Finding, Project


def live(project: Project) -> Iterator[Finding]:
    app = project.app
    replies = app.control.inspect(timeout=2).active_queues() or {}
    if not replies:
        why = "No worker answered: nothing consumes the tasks this app publishes."
        yield Finding("no-worker", ERROR, "broker", why, "production/health-checks/")
    consumed = {q["name"] for queues in replies.values() for q in queues}
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        if connection.transport.driver_type == "redis":
            policy = channel.client.config_get("maxmemory-policy")["maxmemory-policy"]
            if policy != "noeviction":
                why = f"maxmemory-policy {policy}: a full Redis deletes queued tasks silently."
                yield Finding("redis-eviction", ERROR, "broker", why, "configuration/brokers/")
        queues = {project.conf.task_default_queue} | {q for _p, q in route_table(project) if q}
        for queue in sorted(queues - consumed):
            try:
                waiting = channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # (RabbitMQ: no such queue; nothing waits in it)
                channel = connection.channel()
                continue
            if waiting:
                why = f"{waiting} messages wait in {queue!r} and no worker consumes it."
                yield Finding("no-consumer", ERROR, f"queue:{queue}", why, "configuration/routing/")
