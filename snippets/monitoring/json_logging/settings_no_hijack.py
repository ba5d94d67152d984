"""The halfway setting: Celery leaves the root logger alone, but still configures its own."""

from snippets.monitoring.json_logging.settings import *  # noqa: F403

# --8<-- [start:no_hijack]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keeps LOGGING's root handler...
# ...but the worker still gives "celery.task" its own handler and stops it propagating.
# --8<-- [end:no_hijack]
