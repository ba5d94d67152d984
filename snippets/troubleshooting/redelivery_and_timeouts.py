"""Redelivery and timeouts: time limits that keep a late-acked task inside the broker's window.

A full Django settings module over the project's (the worker tests run it as
DJANGO_SETTINGS_MODULE); the page shows the lines.
"""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:time_limits]
# Late acks: the broker holds each message unacknowledged while its task runs. Keep every task
# shorter than the window in which the broker gives up on it: RabbitMQ's consumer_timeout
# (30 min by default) and Redis's visibility_timeout (1 h by default).
CELERY_TASK_SOFT_TIME_LIMIT = 240  # (1)!
CELERY_TASK_TIME_LIMIT = 300  # (2)!
# --8<-- [end:time_limits]
