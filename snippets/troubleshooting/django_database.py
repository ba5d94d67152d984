"""Django's database in workers: a connection kept across tasks must be checked before each
task, as Django checks it before each request, or a database restart breaks every task that
process runs until the connection is recycled."""

# --8<-- [start:reuse-checked]
from celery.signals import task_prerun
from django.db import connections

# settings.py: reuse each worker process's connection for up to 50 tasks...
CELERY_DB_REUSE_MAX = 50  # (1)!
# ...with, in DATABASES["default"]: "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True


@task_prerun.connect(weak=False)
def check_reused_connections(**_kwargs: object) -> None:
    """What Django does at the start of each request (close_old_connections), for a task."""
    for conn in connections.all(initialized_only=True):
        if conn.settings_dict["CONN_HEALTH_CHECKS"]:  # (2)!
            conn.close_if_unusable_or_obsolete()


# --8<-- [end:reuse-checked]
