"""The project's settings, with LOGGING as the single source of the worker's log format."""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:logging]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,  # keep Celery's and libraries' loggers alive
    "formatters": {"json": {"()": "snippets.monitoring.logging.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        # Task loggers (children of "celery.task") reach the root: logging's default, stated.
        "celery.task": {"propagate": True},
        "kombu": {"level": "WARNING"},
    },
}
# --8<-- [end:logging]
