"""Broker connection: settings that make a lost or slow broker visible instead of fatal or silent.

A full Django settings module over the project's (the worker tests run it as
DJANGO_SETTINGS_MODULE); the page shows the lines each entry needs.
"""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:retry_on_startup]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True  # (1)!
# --8<-- [end:retry_on_startup]

# --8<-- [start:socket_timeout]
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_timeout": 5,  # (1)!
    "socket_connect_timeout": 5,  # (2)!
}
# --8<-- [end:socket_timeout]
