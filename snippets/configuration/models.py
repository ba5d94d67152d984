"""Models used by the Configuration pages."""

# --8<-- [start:task_run]
from django.db import models


class TaskRun(models.Model):
    """One execution of a task: which worker process ran which message, and when.

    The proofs count these rows: two rows for one task id means the broker delivered the
    message twice; the start and finish times show what waited behind what.
    """

    task_id = models.CharField(max_length=255, db_index=True)
    key = models.CharField(max_length=100, db_index=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)


# --8<-- [end:task_run]
