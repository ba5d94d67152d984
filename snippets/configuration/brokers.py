"""Brokers: Redis settings a Django deployment layers over its base settings.

A full Django settings module (the worker tests run it as DJANGO_SETTINGS_MODULE); the page
shows the Redis-specific lines.
"""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:redis]
# CELERY_BROKER_URL (redis://host:6379/0) is read from the environment by the project
# settings, with no default: a broker URL written here would be used by any deploy
# that forgets the variable.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,  # (1)!
    "unacked_restore_interval": 10,  # (2)!
    "unacked_restore_throttle": 10,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True  # (3)!
# --8<-- [end:redis]
