"""Results and waiting: what a web request, a task and a settings file must not expect of
a result backend, and what to write instead."""

# --8<-- [start:view-waits]
from django.http import HttpRequest, JsonResponse

from snippets.task_design.canvas import square

REQUEST_WAIT = 5.0  # seconds a request may wait for the worker


def square_waiting(request: HttpRequest, x: int) -> JsonResponse:
    """ANTI-PATTERN: the request holds a web worker until the task has run."""
    result = square.delay(x)  # a job that takes seconds on a free worker
    return JsonResponse({"square": result.get(timeout=REQUEST_WAIT)})  # (1)!


# --8<-- [end:view-waits]


# --8<-- [start:view-returns-id]
from celery.result import AsyncResult
from django.http import HttpRequest, JsonResponse

from snippets.task_design.canvas import square  # noqa: F811


def square_start(request: HttpRequest, x: int) -> JsonResponse:
    """Publish and answer at once: 202 Accepted, with the id to ask about later."""
    result = square.delay(x)
    return JsonResponse({"task_id": result.id}, status=202)  # (1)!


def square_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """The page (or the client) polls this; it reads the backend and never waits."""
    result = AsyncResult(task_id)
    state = result.state  # (2)!
    if state == "SUCCESS":
        return JsonResponse({"state": state, "square": result.result})
    return JsonResponse({"state": state})  # (3)!


# --8<-- [end:view-returns-id]


# --8<-- [start:misnamed-setting]
# settings.py, read by app.config_from_object("django.conf:settings", namespace="CELERY")

# ANTI-PATTERN: without the CELERY_ prefix the namespace never reads it: no result backend.
RESULT_BACKEND = "redis://127.0.0.1:6379/1"

# The name Celery reads: the namespace, an underscore, the setting's name in capitals.
CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/1"
# --8<-- [end:misnamed-setting]


# --8<-- [start:chord-errback]
from celery import chord
from celery.result import AsyncResult  # noqa: F811

from snippets.task_design.canvas import check_positive, record_failure, total


def total_of_positives(numbers: list[int]) -> AsyncResult:
    """Sum in parallel; if a part fails the body never runs, and the errback records it."""
    header = [check_positive.s(n) for n in numbers]
    return chord(header)(total.s().on_error(record_failure.s()))  # (1)!


# --8<-- [end:chord-errback]
