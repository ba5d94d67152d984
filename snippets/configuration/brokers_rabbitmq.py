"""Brokers: RabbitMQ with quorum queues, layered over the project's base settings.

A full Django settings module (the worker tests run it as DJANGO_SETTINGS_MODULE); the page
shows the RabbitMQ-specific lines.
"""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:rabbitmq]
# CELERY_BROKER_URL (amqp://user:password@host:5672/vhost) is read from the environment
# by the project settings, with no default: a broker URL written here would be used by any
# deploy that forgets the variable.
CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"  # (1)!
CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"  # (2)!
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"  # (3)!
CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}  # (4)!
# --8<-- [end:rabbitmq]
