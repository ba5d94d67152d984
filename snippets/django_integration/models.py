"""Models used by the Django integration pages."""

# --8<-- [start:report]
from django.db import models


class Report(models.Model):
    """A report rendered in the background once the row that asks for it is committed."""

    title = models.CharField(max_length=200)
    rendered_at = models.DateTimeField(null=True, blank=True)
    render_count = models.PositiveIntegerField(default=0)


# --8<-- [end:report]
