"""Canvas: chains, groups and chords, and what each needs from the result backend."""

# --8<-- [start:tasks]
import logging
import time

from celery import shared_task

from snippets.task_design.models import ChainFailure

logger = logging.getLogger(__name__)


@shared_task
def add(x: int, y: int) -> int:
    return x + y


SECONDS_PER_UNIT = 0.5  # the stand-in's pace: a larger input takes longer, as real work does


def slow_square(x: int) -> int:
    """The work: a stand-in for yours, taking longer the larger x is."""
    time.sleep(x * SECONDS_PER_UNIT)
    return x * x


@shared_task
def square(x: int) -> int:
    return slow_square(x)


@shared_task
def check_positive(x: int) -> int:
    """A step that can fail: a chain must stop here, and its error callback fire once."""
    if x <= 0:
        raise ValueError(f"expected a positive number, got {x}")
    return x


@shared_task
def total(values: list[int]) -> int:
    """A chord body: receives the header's results as one list, in header order."""
    return sum(values)


@shared_task
def collect(values: list[int]) -> list[int]:
    return values


@shared_task
def record_failure(task_id: str) -> None:
    """An error callback (link_error): called with the id of the task that failed."""
    _, created = ChainFailure.objects.get_or_create(task_id=task_id)  # (1)!
    if created:
        logger.error("canvas step %s failed; recorded for follow-up", task_id)


# --8<-- [end:tasks]


# --8<-- [start:chain]
from celery import Signature, chain


def pipeline(x: int) -> Signature:
    """x -> x + 1 -> check -> x + 10: each step receives the previous step's result."""
    workflow = chain(add.s(x, 1), check_positive.s(), add.s(10))  # (1)!
    workflow.link_error(record_failure.s())  # (2)!
    return workflow


def then_fixed(x: int) -> Signature:
    """An immutable signature (.si) ignores what the previous step returned."""
    return chain(add.s(x, 1), add.si(100, 1))  # (3)!


# --8<-- [end:chain]


# --8<-- [start:chord]
from celery import Signature, chord, group


def squares_total(numbers: list[int]) -> Signature:
    """Square every number in parallel, then sum: the body runs once, after the last one."""
    header = group(square.s(n) for n in numbers)
    return chord(header, total.s())  # (1)!


def squares_in_order(numbers: list[int]) -> Signature:
    header = group(square.s(n) for n in numbers)
    return chord(header, collect.s())


def checked_total(numbers: list[int]) -> Signature:
    """A chord with an error callback: it runs once, for the body, if a header task fails."""
    workflow = chord(group(check_positive.s(n) for n in numbers), total.s())
    workflow.link_error(record_failure.s())  # (2)!
    return workflow


# --8<-- [end:chord]


# --8<-- [start:antipattern]
from celery import shared_task


@shared_task
def total_by_waiting(numbers: list[int]) -> int:
    """ANTI-PATTERN: waits inside a task for other tasks; Celery refuses (it can deadlock)."""
    results = group(square.s(n) for n in numbers).apply_async()
    return sum(results.get(timeout=60))  # RuntimeError: Never call result.get() within a task!


# --8<-- [end:antipattern]
