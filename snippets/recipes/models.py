"""Models of the worked examples (recipes): our own, so each field is the one the recipe needs."""

# --8<-- [start:member]
from django.db import models
from django.utils import timezone


class Member(models.Model):
    """A registered member (Django's default User has no `name`, which the email greets)."""

    name = models.CharField(max_length=100)
    email = models.EmailField(unique=True)
    date_joined = models.DateTimeField(default=timezone.now, db_index=True)
    # NULL until the welcome email went out: the claim the task takes, and what the
    # reconciliation job looks for.
    welcome_sent_at = models.DateTimeField(null=True, blank=True)
    welcome_error = models.CharField(max_length=300, blank=True)  # a permanent SMTP refusal


# --8<-- [end:member]


# --8<-- [start:import_models]
from django.conf import settings
from django.db import models


class Product(models.Model):
    """What the CSV import writes. `sku` is the natural key the upsert matches on."""

    sku = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    verified = models.BooleanField(default=False)  # set by a reviewer, never by an import


class ImportJob(models.Model):
    """One uploaded file and its progress: the source of truth any process can read."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)  # who may read it
    file = models.FileField(upload_to="imports/%Y/%m/")  # storage API: S3, NFS, ...
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    total_rows = models.PositiveIntegerField(null=True)  # counted by the worker
    processed_rows = models.PositiveIntegerField(default=0)  # the checkpoint
    imported_rows = models.PositiveIntegerField(default=0)
    error_rows = models.PositiveIntegerField(default=0)
    row_errors = models.JSONField(default=list)  # the first 100: [{"line": 7, "errors": ...}]
    error = models.TextField(blank=True)  # why the whole job failed
    updated_at = models.DateTimeField(auto_now=True)


# --8<-- [end:import_models]


# --8<-- [start:order_models]
from django.db import models
from django.utils import timezone


class StockItem(models.Model):
    """Units that can still be sold: reserved units are already subtracted."""

    sku = models.CharField(max_length=40, unique=True)
    available = models.PositiveIntegerField()  # a CHECK (available >= 0) in the database


class Order(models.Model):
    """An order and the state machine its workflow advances, one conditional UPDATE a step."""

    class Status(models.TextChoices):
        PENDING = "pending"  # created; the workflow starts after commit
        RESERVED = "reserved"  # stock subtracted for this order
        CHARGING = "charging"  # a charge was (maybe) sent to the provider
        PAID = "paid"  # the provider confirmed the charge
        CONFIRMED = "confirmed"  # the customer has the confirmation email
        OUT_OF_STOCK = "out_of_stock"  # final: nothing reserved, nothing charged
        FAILED = "failed"  # final: the reservation released, nothing charged

    email = models.EmailField()
    sku = models.CharField(max_length=40)
    quantity = models.PositiveIntegerField()
    amount_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    payment_id = models.CharField(max_length=100, blank=True)  # the provider's charge id
    customer_notified_at = models.DateTimeField(null=True, blank=True)  # of a failure
    created_at = models.DateTimeField(default=timezone.now, db_index=True)  # for the sweeper


# --8<-- [end:order_models]
