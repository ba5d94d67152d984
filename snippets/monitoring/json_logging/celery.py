"""The Celery app of a project that keeps Django's LOGGING in the worker."""

# --8<-- [start:app]
import os
from logging.config import dictConfig

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippets.monitoring.json_logging.settings")

app = Celery("snippets")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def use_django_logging(**_kwargs: object) -> None:
    """Any receiver here tells Celery not to touch logging; apply Django's LOGGING instead."""
    from django.conf import settings

    dictConfig(settings.LOGGING)  # again, in a worker (django.setup() did it): it replaces


# --8<-- [end:app]
