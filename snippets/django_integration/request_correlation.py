"""One correlation id from the HTTP request to every task it starts and every log line."""

# --8<-- [start:middleware]
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from snippets.django_integration.correlation_log import (
    VALID_ID,
    correlation_id,
    new_correlation_id,
)
from snippets.error_handling.failure_logging import CORRELATION_HEADER  # "x_request_id"


class CorrelationIdMiddleware:
    """Take the caller's X-Request-ID (or make one), keep it for the request, echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        cid = incoming if VALID_ID.fullmatch(incoming) else new_correlation_id()  # (1)!
        token = correlation_id.set(cid)
        try:
            response = self.get_response(request)
        finally:
            correlation_id.reset(token)  # (2)!
        response["X-Request-ID"] = cid
        return response


# --8<-- [end:middleware]


# --8<-- [start:signals]
from typing import Any

from celery import Task
from celery.signals import before_task_publish, task_postrun, task_prerun


@before_task_publish.connect
def add_correlation_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every published task carries the current id; one published outside a request gets its own."""
    if headers is not None and not headers.get(CORRELATION_HEADER):
        headers[CORRELATION_HEADER] = correlation_id.get() or new_correlation_id()  # (1)!


@task_prerun.connect
def restore_correlation_id(task: Task | None = None, **_: Any) -> None:
    """In the worker: the id the task was published with becomes the current one."""
    correlation_id.set(getattr(task.request, CORRELATION_HEADER, None) if task else None)  # (2)!


@task_postrun.connect
def clear_correlation_id(**_: Any) -> None:
    """The next task in this worker process must not inherit it."""
    correlation_id.set(None)


# --8<-- [end:signals]


# --8<-- [start:tasks]
from celery import chain, group, shared_task
from django.http import JsonResponse

logger = logging.getLogger("snippets.pipeline")


@shared_task
def record_step(step: str) -> str | None:
    """A step of a pipeline; logs, and returns the correlation id it ran under."""
    logger.info("running step %s", step)
    return correlation_id.get()


@shared_task(
    bind=True,
    max_retries=1,
    default_retry_delay=0,
)
def flaky_step(self: Task, step: str) -> str | None:
    """Fails its first attempt; the retry is a new message, published by the worker."""
    logger.info("step %s, attempt %s", step, self.request.retries + 1)
    if self.request.retries == 0:
        raise self.retry()
    return correlation_id.get()


def start_pipeline(request: HttpRequest) -> JsonResponse:
    """A view: everything it starts, and everything those tasks start, shares one id."""
    chained = chain(record_step.si("extract"), record_step.si("load")).apply_async()
    parts = group(record_step.si(f"part-{i}") for i in range(3)).apply_async()
    retried = flaky_step.delay("flaky")
    return JsonResponse(
        {"chain": chained.id, "group": [r.id for r in parts.results], "retried": retried.id}
    )


# --8<-- [end:tasks]


# --8<-- [start:antipattern]
@shared_task(
    bind=True,
)
def record_step_by_celery_id(self: Task, step: str) -> str | None:
    """ANTI-PATTERN: request.correlation_id is Celery's reply id, i.e. this task's own id."""
    logger.info("step %s", step, extra={"correlation_id": self.request.correlation_id})
    return self.request.correlation_id


# --8<-- [end:antipattern]
