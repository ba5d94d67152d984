"""Unregistered tasks: the worker must import every task a publisher can send, by its name.

A message names its task (`headers["task"]`); the worker looks that name up in its registry.
A name it does not know is rejected and dropped, never retried: the fixes make sure the worker
imports the module, and keeps answering to a name that messages already queued still carry.
"""

# --8<-- [start:in_tasks_module]
# myapp/tasks.py: the module autodiscovery imports, in the web process and in the worker
from celery import shared_task


@shared_task
def build_report(report_id: int) -> str:  # (1)!
    return f"report {report_id} built"


# --8<-- [end:in_tasks_module]


# --8<-- [start:rename_alias]
from celery import shared_task

OLD_NAME = "billing.tasks.email_invoice"  # (1)!


@shared_task
def send_invoice(invoice_id: int) -> str:  # (2)!
    return f"invoice {invoice_id} sent"


@shared_task(name=OLD_NAME)  # (3)!
def email_invoice(invoice_id: int) -> str:
    return send_invoice(invoice_id)  # (4)!


# --8<-- [end:rename_alias]


# --8<-- [start:beat_check]
from celery import Celery


def unknown_beat_tasks(app: Celery) -> list[str]:
    """Schedule entries whose task this app does not register: run it with the worker's code
    (a deploy step, a Django system check), before a beat that would send them starts."""
    app.loader.import_default_modules()  # (1)!
    return sorted(
        f"{name}: {entry['task']}"
        for name, entry in app.conf.beat_schedule.items()
        if entry["task"] not in app.tasks
    )


# --8<-- [end:beat_check]
