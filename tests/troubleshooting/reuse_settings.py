"""Settings of a worker that reuses its database connection across tasks (CELERY_DB_REUSE_MAX
from the page's snippet), with Django's connection health checks when TS_HEALTH_CHECKS=1."""

import os

from snippets.project.settings import *  # noqa: F403
from snippets.project.settings import DATABASES
from snippets.troubleshooting.django_database import CELERY_DB_REUSE_MAX  # noqa: F401

DATABASES["default"] = {
    **DATABASES["default"],
    "CONN_MAX_AGE": 600,
    "CONN_HEALTH_CHECKS": os.environ.get("TS_HEALTH_CHECKS") == "1",
}
