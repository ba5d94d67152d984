"""Publishing through a broker restart: settings a Django deployment layers over its base
settings (the chaos run's publisher and worker are configured from this module).

Celery's default publish retry gives up after about 0.6 s; a broker restart takes seconds,
so `delay()` raises OperationalError and the task is never sent.
"""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:publisher]
from snippets.project.settings import CELERY_BROKER_TRANSPORT_OPTIONS

# Ride out a broker restart at the call site: reconnect and re-publish for up to ~45 s
# (waits 0, 0.5, 1, ... capped at 3 s) before delay() raises.
CELERY_TASK_PUBLISH_RETRY = True  # the default, kept explicit
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 18,  # (1)!
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 3,
}
# RabbitMQ: publish() returns only once the broker has taken the message (publisher
# confirms); a message lost on the way raises and is retried instead of vanishing.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "confirm_publish": True,  # (2)!
}
# Keep Celery's persistent defaults: durable queues (task_queues) and
# task_default_delivery_mode = "persistent", written to disk by RabbitMQ.
# --8<-- [end:publisher]
