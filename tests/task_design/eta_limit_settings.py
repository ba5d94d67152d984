"""The project settings with worker_eta_task_limit set, for one worker subprocess."""

from snippets.project.settings import *  # noqa: F403

CELERY_WORKER_ETA_TASK_LIMIT = 2
