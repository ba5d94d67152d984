"""Models used by the task design pages."""

# --8<-- [start:idempotency]
from django.db import models


class Account(models.Model):
    """The side effect under test: a credit must land once, however often the task runs."""

    balance_cents = models.BigIntegerField(default=0)


class ProcessedKey(models.Model):
    """One row per unit of work already done; the unique index refuses a second one."""

    key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)


class Invoice(models.Model):
    """A state machine: each transition is a conditional UPDATE that only one run can win."""

    class Status(models.TextChoices):
        OPEN = "open"
        PAID = "paid"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    paid_at = models.DateTimeField(null=True, blank=True)


# --8<-- [end:idempotency]


# --8<-- [start:charge]
from django.db import models


class Charge(models.Model):
    """A call to a payment provider, recorded around the call: pending, then charged."""

    class Status(models.TextChoices):
        PENDING = "pending"  # asked for (or about to be): the provider may or may not have it
        CHARGED = "charged"  # the provider answered with its charge id

    key = models.CharField(max_length=200, unique=True)  # also sent as the provider's key
    order_id = models.IntegerField()
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    provider_charge_id = models.CharField(max_length=100, blank=True)


# --8<-- [end:charge]


# --8<-- [start:calling]
from django.db import models


class Reminder(models.Model):
    """One row per reminder sent, keyed on the id of the message that asked for it."""

    task_id = models.CharField(max_length=255, unique=True)  # the same in a redelivery
    user_id = models.IntegerField()
    text = models.CharField(max_length=200)
    sent_at = models.DateTimeField(auto_now_add=True)


# --8<-- [end:calling]


# --8<-- [start:canvas]
from django.db import models


class ChainFailure(models.Model):
    """What the error callback records: one row per failed task, with its id."""

    task_id = models.CharField(max_length=255, unique=True)  # a second call finds the row
    created_at = models.DateTimeField(auto_now_add=True)


# --8<-- [end:canvas]


# --8<-- [start:locking]
from django.db import models


class JobRun(models.Model):
    """One row per run that got past its lock: the tests count them."""

    job = models.CharField(max_length=100)
    started_at = models.DateTimeField(auto_now_add=True)


# --8<-- [end:locking]


# --8<-- [start:batching]
from django.db import models


class Item(models.Model):
    """One unit of a big job. processed_count proves "exactly once" (it must end at 1)."""

    value = models.IntegerField()
    score = models.IntegerField(null=True)
    processed_at = models.DateTimeField(null=True, db_index=True)
    processed_count = models.PositiveIntegerField(default=0)


# --8<-- [end:batching]
