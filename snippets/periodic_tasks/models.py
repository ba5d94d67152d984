"""Models of the periodic-tasks section: one row per run, so tests can count and time runs."""

# --8<-- [start:models]
from django.db import models


class PeriodicRun(models.Model):
    """One execution of a periodic job: which schedule entry, which message, when."""

    entry = models.CharField(max_length=200)
    task_id = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)


# --8<-- [end:models]
