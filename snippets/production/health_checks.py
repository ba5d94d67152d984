"""Health checks: files a probe can read, written by the worker only while it consumes."""

# --8<-- [start:heartbeat]
import os
from pathlib import Path

from celery import bootsteps
from celery.signals import worker_ready, worker_shutting_down

from snippets.project.celery import app

LIVENESS_FILE = os.environ.get("CELERY_LIVENESS_FILE")  # e.g. /tmp/celery-alive
READY_FILE = os.environ.get("CELERY_READY_FILE")  # e.g. /tmp/celery-ready
INTERVAL = float(os.environ.get("CELERY_LIVENESS_INTERVAL", "10"))


class ConsumingHeartbeat(bootsteps.StartStopStep):
    """Touch LIVENESS_FILE every INTERVAL seconds, but only while the consumer consumes.

    The timer runs in the worker's event loop: a blocked loop, a lost broker connection or a
    consumer cancelled from every queue all leave the file to go stale, although the process
    is still there (and may even answer a ping).
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, c: object) -> None:
        self.tref = c.timer.call_repeatedly(INTERVAL, self.beat, (c,), priority=10)
        self.beat(c)

    def beat(self, c: object) -> None:
        consuming = bool(c.task_consumer and c.task_consumer.queues)
        if consuming and c.connection and c.connection.connected:
            Path(LIVENESS_FILE).touch()

    def stop(self, c: object) -> None:
        if self.tref:
            self.tref.cancel()
            self.tref = None
        Path(LIVENESS_FILE).unlink(missing_ok=True)


if LIVENESS_FILE:
    app.steps["consumer"].add(ConsumingHeartbeat)


# --8<-- [end:heartbeat]
# --8<-- [start:readiness]
@worker_ready.connect
def mark_ready(**_kwargs: object) -> None:
    """Ready once the worker consumes: the readiness probe starts passing."""
    if READY_FILE:
        Path(READY_FILE).touch()


@worker_shutting_down.connect
def mark_not_ready(**_kwargs: object) -> None:
    """Not ready as soon as the shutdown starts."""
    if READY_FILE:
        Path(READY_FILE).unlink(missing_ok=True)


# --8<-- [end:readiness]
