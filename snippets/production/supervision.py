"""Supervision: say in the log which signal stopped the worker, and how."""

# --8<-- [start:shutdown_log]
import logging

from celery.signals import worker_shutting_down

logger = logging.getLogger(__name__)


@worker_shutting_down.connect
def log_shutdown(sig: str, how: str, exitcode: int, **_kwargs: object) -> None:
    """One line in the journal saying why the worker stopped (systemd, supervisor, kubelet)."""
    logger.warning("worker stopping: signal %s, %s shutdown, exit code %s", sig, how, exitcode)


# --8<-- [end:shutdown_log]
