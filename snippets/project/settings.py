"""Settings of the snippets project: the Django + Celery settings this site recommends.

Every service is read from the environment. The broker and the result backend have no
default in the block the page shows (a deploy that forgets them fails at startup); the
test suite alone gets an embedded default (memory broker, in-memory result cache, SQLite)
so the plain test command works on any machine, and CI runs the same tests against
Redis, RabbitMQ and PostgreSQL.
"""

# --8<-- [start:celery_imports]
import os
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured


def required_env(name: str) -> str:
    """The variable's value; a missing one stops the process with an error that names it."""
    try:
        return os.environ[name]
    except KeyError:  # a bare KeyError here surfaces in `celery worker` as an unrelated one
        raise ImproperlyConfigured(f"{name} is not set in the environment") from None


# --8<-- [end:celery_imports]
import sys
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "snippets-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",  # who is logged in: docs/recipes/csv-import.md's progress view
    "django_celery_beat",
    "django_celery_results",  # docs/configuration/result-backends.md: the django-db backend
    "snippets.django_integration",
    "snippets.task_design",
    "snippets.configuration",
    "snippets.error_handling",
    "snippets.periodic_tasks",
    "snippets.monitoring",
    "snippets.production",
    "snippets.production.celery_audit",  # docs/production/audit.md: manage.py celery_audit
    "snippets.recipes",
    "snippets.troubleshooting",
]
MIDDLEWARE: list[str] = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
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

# The test suite's embedded default, outside the block the page shows: only a pytest run
# gets a memory broker when the variables are unset (its worker subprocesses inherit them).
if "pytest" in sys.modules:
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault("CELERY_RESULT_BACKEND", "cache+memory://")

# --8<-- [start:celery_settings]
# Read by app.config_from_object("django.conf:settings", namespace="CELERY").
# No default: a deploy without the variable stops at startup instead of publishing into
# an in-process memory:// queue that no worker ever reads.
CELERY_BROKER_URL = required_env("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = required_env("CELERY_RESULT_BACKEND")

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
# (RabbitMQ's counterpart is the server's consumer_timeout, 30 min by default.)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# Ack after the task ran, so a worker that dies mid-task does not lose it; the price is
# that such a task may run twice, so every task must be idempotent. Prefetch one message
# at a time so a long task does not hold short ones hostage in its prefetch buffer.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery 5.7: a task whose pool child died (SIGKILL, OOM) is sent again like self.retry(),
# so the task's max_retries (3 by default) bounds it: a task that kills its child every
# time ends FAILURE instead of looping (task_reject_on_worker_lost requeues it forever).
CELERY_TASK_RETRY_ON_WORKER_LOST = True
# With late acks, a task still running when the broker connection drops cannot be acked
# any more and is redelivered: stop it rather than let two copies run (Celery 6.0 default).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# Keep retrying the broker at startup, so a worker that starts before its broker waits for
# it. Celery 5.7 already does (None follows broker_connection_retry); 6.0 stops reading
# broker_connection_retry here, so say it.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CELERY_RESULT_EXPIRES = timedelta(days=1)  # Celery's default, stated: results are not kept
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower and exporters see nothing without events
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TIMEZONE = "UTC"
# --8<-- [end:celery_settings]
