"""What `manage.py celery_audit` catches: a project where every trap of the checklist is set.

Its own Celery app (not the snippets app), so none of these tasks ever reaches a worker.
"""

# --8<-- [start:antipattern]
from datetime import timedelta

from celery import Celery, chord
from celery.schedules import crontab

# ANTI-PATTERN: each line passes review and `manage.py check` on its own.
# (shared=False below only keeps these tasks off the snippets project's own app.)
shop = Celery("shop", set_as_current=False)
shop.conf.update(
    broker_url="redis://localhost:6379/0",  # fallback-url: a deploy without the variable...
    result_backend="redis://localhost:6379/0",  # shared-redis-db: one FLUSHDB empties both
    result_expires=None,  # result-expires: kept forever
    task_acks_late=True,  # connection-loss: no cancel on connection loss
    task_reject_on_worker_lost=True,  # poison-loop: requeued forever, nothing bounds it
    task_soft_time_limit=240,
    task_time_limit=300,
    task_routes={
        "shop.tasks.send_invoice": {"queue": "emails"},  # unconsumed-queue: no -Q emails
        "shop.tasks.send_receipt": "emails",  # unknown-task: renamed long ago
    },
    beat_schedule={
        "nightly-report": {"task": "shop.tasks.report", "schedule": crontab(hour=3)},  # (1)!
        "sync-stock": {"task": "shop.tasks.sync_stock", "schedule": timedelta(minutes=30)},
        "purge-carts": {"task": "shop.tasks.purge_carts", "schedule": crontab(minute=0)},
    },
)


@shop.task(shared=False, name="shop.tasks.report", soft_time_limit=7000, time_limit=7200)  # (2)!
def report() -> None:
    """Builds the month's report (about an hour on a busy month)."""


@shop.task(shared=False, name="shop.tasks.sync_stock", autoretry_for=(OSError,), retry_backoff=True,
           retry_backoff_max=7200)  # fmt: skip
def sync_stock() -> None:  # (3)!
    """Pulls stock levels from the warehouse API."""


@shop.task(shared=False, name="shop.tasks.send_invoice", serializer="pickle", time_limit=60)  # (4)!
def send_invoice(order_id: int) -> None:
    """Sends the invoice e-mail."""


@shop.task(shared=False, name="shop.tasks.order_total", ignore_result=True)  # (5)!
def order_total(order_id: int) -> int:
    """An order's total: it only reads, so running it twice is harmless."""
    return order_id * 10


# A chord: the report runs once every total is in, so it needs the result backend.
month_end = chord([order_total.s(1), order_total.s(2)], report.si())


# --8<-- [end:antipattern]
