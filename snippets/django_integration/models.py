"""Models used by the Django integration pages."""

# --8<-- [start:report]
from django.db import models


class Report(models.Model):
    """A report rendered in the background once the row that asks for it is committed."""

    title = models.CharField(max_length=200)
    rendered_at = models.DateTimeField(null=True, blank=True)
    render_count = models.PositiveIntegerField(default=0)
    render_task_id = models.UUIDField(null=True, blank=True)  # its task, known before publish


# --8<-- [end:report]


# --8<-- [start:outbox]
import uuid

from django.db import models


class OutboxMessage(models.Model):
    """A task to publish, written in the same transaction as the data it is about."""

    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list)  # JSON only: ids, never model instances
    task_id = models.UUIDField(default=uuid.uuid4, unique=True)  # the published task's id
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)


# --8<-- [end:outbox]


# --8<-- [start:job]
from django.db import models


class Job(models.Model):
    """A unit of work that exactly one worker may claim."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    claimed_by = models.CharField(max_length=200, blank=True)
    claims = models.PositiveIntegerField(default=0)  # how many workers believed they won
    claim_id = models.CharField(max_length=255, blank=True, db_index=True)  # the claiming task


# --8<-- [end:job]


# --8<-- [start:stock]
from django.db import models


class StockItem(models.Model):
    """A counter that concurrent tasks decrement."""

    sku = models.CharField(max_length=50, unique=True)
    available = models.IntegerField(default=0)  # no CHECK >= 0: the tests must show it going < 0


class Reservation(models.Model):
    """What one message reserved: its task id is unique, so a redelivery reserves nothing."""

    task_id = models.CharField(max_length=255, unique=True)
    item = models.ForeignKey(StockItem, on_delete=models.CASCADE)
    quantity = models.IntegerField()
    granted = models.BooleanField()  # False: there was not enough left


# --8<-- [end:stock]
