"""The Celery app of the snippets project, configured the way this site teaches."""

# --8<-- [start:app]
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippets.project.settings")

app = Celery("snippets")
# All Celery settings live in Django settings, prefixed CELERY_ (CELERY_BROKER_URL, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")
# Import the tasks of every installed app (their tasks modules).
app.autodiscover_tasks()
# --8<-- [end:app]
