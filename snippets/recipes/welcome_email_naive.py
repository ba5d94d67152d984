"""ANTI-PATTERN: the welcome email as it circulates; tests/recipes/test_welcome_email.py shows
each of its failures next to the pattern in welcome_email.py."""

# --8<-- [start:naive]
from celery import Task, shared_task
from django.core.mail import send_mail
from django.db import transaction

from snippets.recipes.models import Member


@shared_task(
    bind=True,
    max_retries=3,
)
def send_welcome_email_naive(self: Task, user_id: int) -> None:
    """ANTI-PATTERN: the version that circulates (see the critique on the page)."""
    try:
        user = Member.objects.get(id=user_id)
        send_mail(
            subject="Welcome!",
            message=f"Hi {user.name}, welcome to our platform!",
            from_email="noreply@example.com",
            recipient_list=[user.email],
        )
    except Member.DoesNotExist:
        pass  # a deleted member, or a replica that lags: nobody will ever know
    except Exception as exc:  # a bad template is retried like a network blip
        raise self.retry(exc=exc, countdown=60 * (2**self.request.retries)) from exc


def register_naive(name: str, email: str) -> Member:
    """ANTI-PATTERN: if the broker is down, on_commit raises after the row is committed."""
    user = Member.objects.create(name=name, email=email)
    transaction.on_commit(lambda: send_welcome_email_naive.delay(user.id))
    return user


# --8<-- [end:naive]


# --8<-- [start:naive_loop]
def invite_all_naive(people: list[tuple[str, str]]) -> list[Member]:
    """ANTI-PATTERN: the lambda reads `member` when it runs, after the loop: N x the last id."""
    members = []
    with transaction.atomic():
        for name, email in people:
            member = Member.objects.create(name=name, email=email)
            transaction.on_commit(lambda: send_welcome_email_naive.delay(member.pk))  # noqa: B023
            members.append(member)
    return members


# --8<-- [end:naive_loop]
