"""Production settings: what the system check catches.

The check is in snippets/production/celery_audit/system_check.py (the audit app ships it).
"""

# --8<-- [start:antipattern]
# ANTI-PATTERN: every line looks right, and none does what it says.
CELERY_TASK_ACK_LATE = True  # typo (ACKS): Celery never reads it, tasks are acked before they run
CELERY_ACCEPT_CONTENT = ["json", "pickle"]  # whoever can publish can run code on the worker
CELERY_TASK_TIME_LIMIT = 7200  # above Redis' 3600 s visibility timeout: redelivered mid-run
# --8<-- [end:antipattern]
