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
