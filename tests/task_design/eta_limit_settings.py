"""The production settings plus worker_eta_task_limit, for one worker subprocess."""

from snippets.production.settings import *  # noqa: F403

CELERY_WORKER_ETA_TASK_LIMIT = 2
