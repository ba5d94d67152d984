"""Models used by the error-handling pages."""

# --8<-- [start:invoice]
from django.db import models


class Invoice(models.Model):
    """An invoice pushed to an external billing API; remote_id is set once it is there."""

    number = models.CharField(max_length=30, unique=True)
    amount_cents = models.PositiveIntegerField()
    remote_id = models.CharField(max_length=64, blank=True)  # "" until the API accepted it


# --8<-- [end:invoice]


# --8<-- [start:export]
from django.db import models


class Export(models.Model):
    """A long-running export; its status tells whether cleanup ran after a time limit."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        TIMED_OUT = "timed_out"  # set by the cleanup that SoftTimeLimitExceeded lets run

    status = models.CharField(max_length=10, choices=Status, default=Status.RUNNING)
    rows_written = models.PositiveIntegerField(default=0)
    partial_file = models.CharField(max_length=300, blank=True)


# --8<-- [end:export]


# --8<-- [start:payment]
from django.db import models


class PaymentAttempt(models.Model):
    """One row per run of the task: how often the work started (the tests count these)."""

    key = models.CharField(max_length=64, db_index=True)
    task_id = models.CharField(max_length=64)
    retries = models.PositiveIntegerField()  # request.retries: 0 on a redelivery, n on a retry
    pid = models.PositiveIntegerField()  # the pool child that ran it


class PaymentRequest(models.Model):
    """What to capture: the document the task parses (a malformed one can kill its process)."""

    key = models.CharField(max_length=64, unique=True)
    document = models.TextField()  # the provider's XML, say


class Payment(models.Model):
    """The side effect: the unique key makes a second run a no-op, not a second charge."""

    key = models.CharField(max_length=64, unique=True)
    captured_at = models.DateTimeField(auto_now_add=True)


# --8<-- [end:payment]


# --8<-- [start:failed_task]
from django.db import models


class FailedTask(models.Model):
    """A dead letter kept in the database: enough to see what failed and to send it again."""

    task_id = models.CharField(max_length=64, unique=True)  # a redelivered failure: one row
    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    exception = models.TextField()
    failed_at = models.DateTimeField(auto_now_add=True)
    replayed_at = models.DateTimeField(null=True, blank=True)  # set once, by the replay


# --8<-- [end:failed_task]


# --8<-- [start:import_row]
from django.db import models


class ImportRow(models.Model):
    """A row to import; a malformed one cannot succeed until someone fixes the data."""

    data = models.JSONField()
    imported_count = models.PositiveIntegerField(default=0)  # >1 would be a double import


# --8<-- [end:import_row]
