"""The project settings with worker_deduplicate_successful_tasks on, for one worker subprocess."""

from snippets.project.settings import *  # noqa: F403

CELERY_WORKER_DEDUPLICATE_SUCCESSFUL_TASKS = True
