"""One receiver logs every task failure with the context needed to act on it."""

# --8<-- [start:handler]
import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.signals import task_failure

logger = logging.getLogger("snippets.tasks")
CORRELATION_HEADER = "x_request_id"  # set on publish by the request-correlation pattern

# Optional: callables that also send the failure to an error tracker (Sentry, Rollbar...).
ErrorTracker = Callable[[BaseException | None, dict[str, Any]], None]
error_trackers: list[ErrorTracker] = []  # (1)!


@task_failure.connect
def log_task_failure(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: list | tuple | None = None,
    kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    """Log any task's failure once, with who failed, on what input, and for which request."""
    request = sender.request if sender is not None else None
    if getattr(request, "id", None) != task_id:
        request = None  # (2)!
    secret = getattr(sender, "secret_kwargs", ())
    shown_kwargs = {k: "***" if k in secret else v for k, v in (kwargs or {}).items()}
    context = {
        "task_id": task_id,
        "task_name": getattr(sender, "name", None),
        # argsrepr/kwargsrepr are what the caller chose to show: secrets can be hidden there.
        "task_args": getattr(request, "argsrepr", None) or repr(tuple(args or ())),
        "task_kwargs": getattr(request, "kwargsrepr", None) or repr(shown_kwargs),
        "retries": getattr(request, "retries", None),  # None: unknown (no request), not 0
        # Our own header: Celery's request.correlation_id is the task id, not a request's.
        "correlation_id": getattr(request, CORRELATION_HEADER, None),
    }
    logger.error(
        "task %(task_name)s[%(task_id)s] failed: %(exception)r (args=%(task_args)s, "
        "retries=%(retries)s, correlation_id=%(correlation_id)s)",
        {**context, "exception": exception},
        extra=context,
    )
    for track in error_trackers:
        try:
            track(exception, context)
        except Exception:  # a broken tracker must not hide the failure, nor fail the worker
            logger.exception("error tracker %r failed", track, extra={"task_id": task_id})


# --8<-- [end:handler]


# --8<-- [start:redaction]
from typing import Any

from celery.contrib.django.task import DjangoTask
from celery.result import AsyncResult


class RedactSecrets(DjangoTask):
    """Base task: the keyword arguments named in `secret_kwargs` are shown as '***'.

    Celery logs, events (Flower) and the failure log show `kwargsrepr` instead of the real
    keyword arguments. Setting it here, not at each call, also covers every retry: a retry is
    published through this same apply_async.
    """

    secret_kwargs: tuple[str, ...] = ()

    def apply_async(
        self,
        args: tuple | list | None = None,
        kwargs: dict[str, Any] | None = None,
        *rest: Any,  # Celery's own positional task_id, producer, link... pass through
        **options: Any,
    ) -> AsyncResult:
        if self.secret_kwargs and kwargs:
            shown = {k: "***" if k in self.secret_kwargs else v for k, v in kwargs.items()}
            options["kwargsrepr"] = repr(shown)
        return super().apply_async(args, kwargs, *rest, **options)


# --8<-- [end:redaction]


# --8<-- [start:charge]
import requests
from celery import Task, shared_task
from django.conf import settings

from snippets.error_handling.retries import TRANSIENT_ERRORS, TransientAPIError


def post_charge(order_id: int, card_token: str) -> str:
    """Charge a card at the payment API; the token goes in the body, never in a log."""
    response = requests.post(
        f"{settings.BILLING_API_URL}/charges",
        json={"order_id": order_id, "card_token": card_token},
        headers={"Idempotency-Key": f"charge-{order_id}"},
        timeout=(3.05, 10),
    )
    if response.status_code >= 500:
        raise TransientAPIError(f"{response.status_code} from the payment API")
    response.raise_for_status()  # 402 card declined: final
    return response.json()["id"]


@shared_task(
    bind=True,
    base=RedactSecrets,
    secret_kwargs=("card_token",),  # (1)!
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=2,
)
def charge_card(self: Task, order_id: int, *, card_token: str) -> str:  # (2)!
    """Charge an order's card; transient errors retry, a decline fails."""
    return post_charge(order_id, card_token)


# --8<-- [end:charge]


# --8<-- [start:antipattern]
from celery import Task, shared_task

from snippets.error_handling.retries import TRANSIENT_ERRORS


@shared_task(
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=2,
)
def charge_card_redacted_by_caller(self: Task, order_id: int, *, card_token: str) -> str:
    """ANTI-PATTERN: relies on each caller passing kwargsrepr=...; a retry does not."""
    return post_charge(order_id, card_token)


# --8<-- [end:antipattern]
