"""ANTI-PATTERN settings: transient messages and Celery's default publish retry."""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:transient]
# Faster on RabbitMQ (nothing written to disk), and every queued task is gone when the
# broker restarts. With the default publish retry policy (3 retries within ~0.6 s), a
# delay() during the restart raises instead of waiting.
CELERY_TASK_DEFAULT_DELIVERY_MODE = "transient"
# --8<-- [end:transient]
