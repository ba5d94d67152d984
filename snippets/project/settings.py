"""Settings of the snippets project: the Django + Celery settings this site recommends.

Every service is read from the environment with an embedded default (memory broker,
in-memory result cache, SQLite), so the plain test command works on any machine and
CI runs the same tests against Redis, RabbitMQ and PostgreSQL.
"""

# --8<-- [start:celery_imports]
import os
from datetime import timedelta

# --8<-- [end:celery_imports]
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "snippets-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_celery_beat",
    "snippets.django_integration",
    "snippets.task_design",
    "snippets.configuration",
    "snippets.error_handling",
    "snippets.periodic_tasks",
    "snippets.monitoring",
    "snippets.production",
    "snippets.recipes",
]
MIDDLEWARE: list[str] = [
    # docs/django-integration/request-correlation.md: one id per request, carried into tasks.
    "snippets.django_integration.request_correlation.CorrelationIdMiddleware",
]
ROOT_URLCONF = "snippets.project.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A file-backed SQLite test database (not in-memory) so a worker *subprocess* sees the rows.
# SNIPPETS_DB_NAME lets the test harness point such a subprocess at the test database.
_SQLITE = f"sqlite:///{BASE_DIR / '.snippets.sqlite3'}"
DATABASES = {
    "default": dj_database_url.config(default=_SQLITE, conn_max_age=0),
    "other": dj_database_url.config(
        env="OTHER_DATABASE_URL", default=f"sqlite:///{BASE_DIR / '.snippets-other.sqlite3'}"
    ),
}
_SQLITE_OPTIONS = {"OPTIONS": {"timeout": 20}}
for _alias, _db in DATABASES.items():
    _sqlite = _db["ENGINE"].endswith("sqlite3")
    _db.update(
        {**_SQLITE_OPTIONS, "TEST": {"NAME": str(BASE_DIR / f".test-{_alias}.sqlite3")}}
        if _sqlite
        else {}
    )
    _db["NAME"] = os.environ.get(f"SNIPPETS_{_alias.upper()}_DB_NAME", _db["NAME"])

# Uploaded files (the recipes' CSV imports): a directory the web and worker processes share.
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", str(BASE_DIR / ".media"))

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Django's default is None: an SMTP server that never answers blocks the worker forever.
EMAIL_TIMEOUT = 10

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"snippets": {"handlers": ["console"], "level": "INFO"}},
}

# --8<-- [start:celery_settings]
# Read by app.config_from_object("django.conf:settings", namespace="CELERY").
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://")

# JSON only: pickle in accept_content lets anyone who can publish run code on the worker.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]

# Every task gets a finite budget; a task that needs more says so itself.
CELERY_TASK_SOFT_TIME_LIMIT = 240  # SoftTimeLimitExceeded raised inside the task: clean up
CELERY_TASK_TIME_LIMIT = 300  # the pool child is killed and replaced

# Redis redelivers an unacked message after visibility_timeout: keep it above the hard
# time limit and the longest countdown/ETA, or a task still running is run a second time.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# Ack after the task ran, so a worker that dies mid-task does not lose it; the price is
# that such a task may run twice, so every task here is idempotent. Prefetch one message
# at a time so a long task does not hold short ones hostage in its prefetch buffer.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# Keep retrying the broker at startup too (the default of None follows broker_connection_retry
# and warns); a worker that starts before its broker then waits for it instead of exiting.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CELERY_RESULT_EXPIRES = timedelta(days=1)
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower and exporters see nothing without events
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TIMEZONE = "UTC"
# --8<-- [end:celery_settings]
