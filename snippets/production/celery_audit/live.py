"""`--live`: ask the running broker and workers (read only: nothing is published or consumed)."""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterator
from typing import Any

from .checks import route_table
from .findings import ERROR, INFO, Finding, Project

# --8<-- [start:consumer_timeout]
# The node's application environment, as the CLI prints it: {consumer_timeout,1800000},
ENVIRONMENT = ("rabbitmq-diagnostics", "--quiet", "environment")
CONSUMER_TIMEOUT = re.compile(r"\{consumer_timeout,\s*(\w+)\}")


def consumer_timeout(app: Any, node: str | None, given: float) -> tuple[float, str]:
    """(seconds, "") as the RabbitMQ node has it, or (`given`, why it could not be read).

    AMQP does not carry it and the management API does not show it: the CLI does, on the
    broker's host (or wherever the node's Erlang cookie is). Read only."""
    if not str(app.conf.broker_url or "").startswith(("amqp", "pyamqp")):
        return given, ""  # Redis: its visibility_timeout is in the settings
    argv = [*ENVIRONMENT, *(["-n", node] if node else [])]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return given, f"{argv[0]}: {error}"
    if done.returncode:
        lines = (done.stderr + done.stdout).strip().splitlines()
        return given, lines[0] if lines else f"{argv[0]} exited {done.returncode}"
    match = CONSUMER_TIMEOUT.search(done.stdout)
    if not match or not match[1].isdigit():  # undefined (or unset): no timeout at all
        return math.inf, ""
    seconds = int(match[1]) / 1000  # milliseconds in the node's configuration
    return (int(seconds) if seconds.is_integer() else seconds), ""


# --8<-- [end:consumer_timeout]


def live(project: Project) -> Iterator[Finding]:
    app = project.app
    if project.consumer_timeout_unread:
        why = f"RabbitMQ's consumer_timeout could not be read ({project.consumer_timeout_unread})"
        why += f": the checks above assumed {project.consumer_timeout:g} s (--consumer-timeout)."
        yield Finding("consumer-timeout", INFO, "broker", why, "error-handling/timeouts/")
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
