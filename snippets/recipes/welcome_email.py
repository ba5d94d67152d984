"""Welcome email after registration: after commit, sent once, retried only on transient errors."""

# --8<-- [start:errors]
import logging
import socket
from smtplib import SMTPException, SMTPRecipientsRefused, SMTPResponseException

from celery import Task, shared_task
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from snippets.recipes.models import Member

logger = logging.getLogger("snippets.recipes.welcome_email")


class PermanentSMTPError(Exception):
    """A 5xx about us, not the recipient (auth, sender refused): fail now, do not retry."""


# --8<-- [end:errors]
# --8<-- [start:task]
@shared_task(
    bind=True,
    autoretry_for=(SMTPException, ConnectionError, TimeoutError, socket.gaierror),  # (1)!
    retry_backoff=2,  # (2)!
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=6,
    soft_time_limit=30,  # (3)!
    time_limit=60,
)
def send_welcome_email(self: Task, member_id: int) -> str:
    """Send the welcome email at most once per member, and say why when it does not."""
    context = {"member_id": member_id, "task_id": self.request.id, "retries": self.request.retries}
    with transaction.atomic():
        claimed = Member.objects.filter(
            pk=member_id, welcome_sent_at__isnull=True, welcome_error=""
        ).update(welcome_sent_at=timezone.now())  # (4)!
        if not claimed:
            if Member.objects.filter(pk=member_id).exists():
                logger.info(
                    "welcome email to member %(member_id)s already handled", context, extra=context
                )
                return "already-handled"
            logger.warning(  # (5)!
                "welcome email not sent: member %(member_id)s does not exist (task %(task_id)s)",
                context,
                extra=context,
            )
            return "no-such-member"
        member = Member.objects.get(pk=member_id)
        try:
            send_mail(  # (6)!
                subject="Welcome!",
                message=f"Hi {member.name}, welcome to our platform!",
                from_email="noreply@example.com",
                recipient_list=[member.email],
            )
        except SMTPRecipientsRefused as exc:
            code = min(code for code, _msg in exc.recipients.values())
            if code < 500:
                raise  # 4xx (greylisting, mailbox busy): an SMTPException, retried
            error = f"SMTP {code}: {exc}"  # (7)!
            Member.objects.filter(pk=member_id).update(welcome_sent_at=None, welcome_error=error)
            logger.error(
                "welcome email to member %(member_id)s refused: %(error)s (task %(task_id)s)",
                {**context, "error": error},
                extra=context,
            )
            return "refused"
        except SMTPResponseException as exc:
            if exc.smtp_code >= 500:  # (8)!
                raise PermanentSMTPError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise  # 421 and friends: retried
    logger.info("welcome email sent to member %(member_id)s", context, extra=context)
    return "sent"


# --8<-- [end:task]


# --8<-- [start:register]
def register_member(name: str, email: str) -> Member:
    """Create the member; publish the welcome email once the row is committed."""
    with transaction.atomic():
        member = Member.objects.create(name=name, email=email)
        member_id = member.pk

        def publish_welcome_email() -> None:  # (1)!
            send_welcome_email.delay(member_id)

        transaction.on_commit(publish_welcome_email, robust=True)  # (2)!
    return member


# --8<-- [end:register]


# --8<-- [start:reconcile]
from datetime import timedelta


@shared_task(soft_time_limit=60, time_limit=90)
def reconcile_welcome_emails(min_age_seconds: int = 300, max_age_hours: int = 48) -> int:
    """Re-publish the welcome email of members who joined a while ago and still have none."""
    now = timezone.now()
    owed = Member.objects.filter(
        welcome_sent_at__isnull=True,
        welcome_error="",
        date_joined__lte=now - timedelta(seconds=min_age_seconds),  # (1)!
        date_joined__gte=now - timedelta(hours=max_age_hours),  # (2)!
    ).values_list("pk", flat=True)[:1000]
    member_ids = list(owed)
    for member_id in member_ids:
        send_welcome_email.delay(member_id)
    if member_ids:
        logger.warning("re-published %d owed welcome emails: %s", len(member_ids), member_ids)
    return len(member_ids)


# --8<-- [end:reconcile]
