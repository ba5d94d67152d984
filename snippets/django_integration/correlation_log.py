"""The correlation id's home: a context variable and a logging filter.

Standard library only, so Django's LOGGING setting can name the filter: logging is configured
in django.setup() before the apps (and their models) are loaded.
"""

# --8<-- [start:context]
import re
import uuid
from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # (1)!


def new_correlation_id() -> str:
    return uuid.uuid4().hex


# --8<-- [end:context]


# --8<-- [start:logging]
import logging


class CorrelationIdFilter(logging.Filter):
    """Give every record a correlation_id attribute, for the formatter to print."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):  # keep one set explicitly (extra=...)
            record.correlation_id = correlation_id.get() or "-"
        return True


# settings.py
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation_id": {"()": "snippets.django_integration.correlation_log.CorrelationIdFilter"}
    },
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s [%(correlation_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["correlation_id"],  # (1)!
        }
    },
    "loggers": {"snippets": {"handlers": ["console"], "level": "INFO"}},
}


# --8<-- [end:logging]
