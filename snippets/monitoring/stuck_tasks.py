"""Debugging stuck tasks: where is it, and how to get it moving (or stop it) safely."""

# --8<-- [start:blocking]
import requests
from celery import shared_task


@shared_task
def fetch_status_without_timeout(url: str) -> int:
    """ANTI-PATTERN: no timeout; a server that accepts and never answers holds the process."""
    return requests.get(url).status_code


@shared_task
def fetch_status(url: str) -> int:
    """The same call with connect and read timeouts: a silent server is an error in seconds."""
    return requests.get(url, timeout=(3, 5)).status_code


# --8<-- [end:blocking]


# --8<-- [start:diagnose]
from celery import Celery

from snippets.monitoring.prometheus import queue_length  # (1)!


def where_is(app: Celery, task_id: str, queues: list[str]) -> dict:
    """Ask the result backend, every worker and the broker where a task is."""
    workers = [name for reply in app.control.ping(timeout=1) for name in reply]
    found: dict = {"state": app.AsyncResult(task_id).state, "workers": workers}  # (2)!
    consumed: set[str] = set()
    if workers:  # (3)!
        inspect = app.control.inspect(destination=workers, timeout=5)  # returns once all answered
        for what, replies in [
            ("active", inspect.active()),  # running now
            ("reserved", inspect.reserved()),  # prefetched, waiting for a free process
            ("scheduled", inspect.scheduled()),  # ETA/countdown, held by the worker
        ]:
            for worker, tasks in (replies or {}).items():
                ids = {t.get("request", t)["id"] for t in tasks}  # scheduled wraps the request
                if task_id in ids:
                    found[what] = worker
        consumed = {q["name"] for qs in (inspect.active_queues() or {}).values() for q in qs}
    with app.connection_for_read() as conn:
        found["unconsumed_queues"] = {  # (4)!
            queue: waiting
            for queue in queues
            if queue not in consumed and (waiting := queue_length(conn, queue))
        }
    return found


# --8<-- [end:diagnose]
