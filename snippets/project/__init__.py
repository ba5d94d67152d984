"""The Django project behind every snippet: settings, the Celery app, urls."""

# --8<-- [start:import_app]
# Import the Celery app when Django starts so that @shared_task binds to it.
from .celery import app as celery_app

__all__ = ("celery_app",)
# --8<-- [end:import_app]
