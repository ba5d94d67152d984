"""One receiver logs every task failure with the context needed to act on it."""

# --8<-- [start:handler]
import logging
from typing import Any

from celery import Task
from celery.signals import task_failure

logger = logging.getLogger("snippets.tasks")
CORRELATION_HEADER = "x_request_id"  # set on publish by the request-correlation pattern


@task_failure.connect
def log_task_failure(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    """Log any task's failure once, with who failed, on what input, and for which request."""
    request = sender.request if sender is not None else None
    context = {
        "task_id": task_id,
        "task_name": getattr(sender, "name", None),
        # argsrepr/kwargsrepr are what the caller chose to show: secrets can be hidden there.
        "task_args": getattr(request, "argsrepr", None) or repr(getattr(request, "args", None)),
        "task_kwargs": getattr(request, "kwargsrepr", None)
        or repr(getattr(request, "kwargs", None)),
        "retries": getattr(request, "retries", 0),
        # Our own header: Celery's request.correlation_id is the task id, not a request's.
        "correlation_id": getattr(request, CORRELATION_HEADER, None),
    }
    logger.error(
        "task %(task_name)s[%(task_id)s] failed: %(exception)r (args=%(task_args)s, "
        "retries=%(retries)s, correlation_id=%(correlation_id)s)",
        {**context, "exception": exception},
        extra=context,
    )


# --8<-- [end:handler]
