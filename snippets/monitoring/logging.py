"""Worker logs as JSON lines carrying the task id, task name and correlation id."""

# --8<-- [start:formatter]
import json
import logging
from datetime import UTC, datetime

from celery import current_task

CORRELATION_HEADER = "x_request_id"  # the header the request-correlation pattern publishes
RECORD_FIELDS = {*vars(logging.makeLogRecord({})), "message", "asctime"}  # not extra=...


class JsonFormatter(logging.Formatter):
    """One JSON object per line; inside a task, with the task's id, name and correlation id."""

    def format(self, record: logging.LogRecord) -> str:
        request = getattr(current_task, "request", None)  # (1)!
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
            "task_id": getattr(request, "id", None),
            "task_name": getattr(current_task, "name", None) if request else None,
            "correlation_id": getattr(request, CORRELATION_HEADER, None),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        extra = {k: v for k, v in vars(record).items() if k not in RECORD_FIELDS}  # (2)!
        return json.dumps({**extra, **entry}, default=str)


# --8<-- [end:formatter]


# --8<-- [start:task]
from celery import shared_task
from celery.utils.log import get_task_logger

logger = get_task_logger(__name__)  # (1)!


@shared_task
def import_rows(batch: int) -> int:
    """Log with the task logger: the formatter adds which task, and for which request."""
    if batch < 0:
        raise ValueError(f"no batch {batch}")  # logged by the worker, with the traceback
    logger.info("imported batch %s", batch, extra={"batch": batch})
    return batch


# --8<-- [end:task]
