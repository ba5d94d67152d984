"""Calling tasks: delay, apply_async options, signatures, and what ETA costs on each broker."""

# --8<-- [start:task]
from celery import Task, shared_task

from snippets.task_design.models import Reminder


@shared_task(bind=True)
def send_reminder(self: Task, user_id: int, text: str) -> int:
    """Send (here: record) one reminder per message, however often it is delivered."""
    reminder, _ = Reminder.objects.get_or_create(
        task_id=self.request.id, defaults={"user_id": user_id, "text": text}
    )  # (1)!
    return reminder.pk


# --8<-- [end:task]


# --8<-- [start:calling]
from datetime import timedelta

from celery.result import AsyncResult
from django.utils import timezone


def remind_now(user_id: int) -> AsyncResult:
    """delay(*args, **kwargs) is apply_async(args, kwargs) with no options."""
    return send_reminder.delay(user_id, "Welcome aboard")  # (1)!


def remind_later(user_id: int, request_id: str, queue: str = "reminders") -> AsyncResult:
    """apply_async takes the execution options that delay() cannot."""
    return send_reminder.apply_async(
        args=(user_id, "Your basket is waiting"),
        eta=timezone.now() + timedelta(minutes=15),  # (2)!
        expires=timezone.now() + timedelta(minutes=25),  # (3)!
        queue=queue,  # (4)!
        priority=3,  # (5)!
        headers={"x_request_id": request_id},  # (6)!
    )


def remind_soon(user_id: int, queue: str = "celery") -> AsyncResult:
    """countdown is eta relative to now; expires takes seconds too."""
    return send_reminder.apply_async(
        (user_id, "Still there?"), countdown=10, expires=60, queue=queue
    )


def remind_and_forget(user_id: int) -> AsyncResult:
    """Fire-and-forget: nobody reads this call's result, so the worker stores none."""
    return send_reminder.apply_async((user_id, "See you soon"), ignore_result=True)  # (7)!


# --8<-- [end:calling]


# --8<-- [start:signatures]
from celery import Signature


def reminder_for(text: str) -> Signature:
    """A partial: the text now, the user id later (prepended to the args when called)."""
    return send_reminder.s(text=text)  # (1)!


def reminder_options() -> Signature:
    """A complete signature with its options, to pass around, store, or put in a canvas."""
    return send_reminder.signature((42, "Your report is ready"), countdown=1, priority=5)  # (2)!


# --8<-- [end:signatures]


# --8<-- [start:visibility]
def redis_transport_options(longest_eta_s: int, time_limit_s: int) -> dict[str, int]:
    """Redis transport options: the unacked message must stay invisible until the task is done.

    A worker holds a countdown/ETA message unacknowledged until it runs. Redis hands any
    message unacknowledged for longer than visibility_timeout to another consumer: a countdown
    longer than the timeout makes the task run twice (or more).
    """
    margin = 300
    return {"visibility_timeout": longest_eta_s + time_limit_s + margin}  # (1)!


# --8<-- [end:visibility]
