"""The production settings plus worker_deduplicate_successful_tasks, for one worker."""

from snippets.production.settings import *  # noqa: F403

CELERY_WORKER_DEDUPLICATE_SUCCESSFUL_TASKS = True
