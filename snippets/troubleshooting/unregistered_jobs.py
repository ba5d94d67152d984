"""A module autodiscovery never imports: its task is unknown to the worker.

`app.autodiscover_tasks()` imports `<app>.tasks` of every installed app, nothing else. A task
defined in `<app>/jobs.py` registers only in a process that imports `jobs.py` itself: the web
process whose view imports it can publish it, the worker has never heard of it. (The
troubleshooting app skips this module on purpose: see `apps.py`, `entry_modules`.)
"""

# --8<-- [start:not_imported]
# myapp/jobs.py: not myapp/tasks.py, so autodiscovery never imports it
from celery import shared_task


@shared_task
def build_report(report_id: int) -> str:
    return f"report {report_id} built"


# --8<-- [end:not_imported]
