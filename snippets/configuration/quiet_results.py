"""Result backends: store no result unless a task opts in, and store who ran what."""

# --8<-- [start:settings]
CELERY_TASK_IGNORE_RESULT = True  # (1)!
CELERY_RESULT_EXTENDED = True  # (2)!
# --8<-- [end:settings]
