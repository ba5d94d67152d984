"""Proof for docs/task-design/canvas.md: chains, chords, immutable signatures, no .get()."""

import uuid

import pytest
from celery import Celery, chain, chord, group
from celery.exceptions import ChordError, CPendingDeprecationWarning
from django.apps import apps

from snippets.task_design.canvas import (
    SECONDS_PER_UNIT,
    add,
    check_positive,
    checked_total,
    collect,
    pipeline,
    record_failure,
    square,
    squares_in_order,
    squares_total,
    then_fixed,
    total,
    total_by_waiting,
)
from snippets.task_design.models import ChainFailure
from tests.harness.redelivery import deliver_again
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_chain_passes_each_result_to_the_next_step(celery_worker):
    assert pipeline(1).apply_async().get(timeout=30) == 12  # (1 + 1) -> check -> + 10
    assert not ChainFailure.objects.exists()


def test_a_chain_stops_at_the_first_failure_and_the_errback_fires_once(celery_worker, published):
    """the failing step's id is recorded once; the last step is never published."""
    result = pipeline(-5).apply_async()  # -5 + 1 = -4: check_positive fails
    with pytest.raises(ValueError, match="expected a positive number, got -4"):
        result.get(timeout=30)

    failed = result.parent  # the chain's middle step
    wait_until(lambda: ChainFailure.objects.exists(), timeout=30, what="the error callback")
    # A duplicate callback would show in `published` below, not as a row (the callback finds
    # its row), and no wait for it: the solo worker ran the callback only after it finished
    # the failing step, which publishes every callback it calls.
    assert list(ChainFailure.objects.values_list("task_id", flat=True)) == [failed.id]
    assert failed.state == "FAILURE"
    assert failed.parent.get(timeout=5) == -4  # the first step ran
    sent = [p["name"] for p in published]
    assert sent.count(add.name) == 1  # the last step (another add) was never even published
    assert sent.count(record_failure.name) == 1  # the error callback, once
    with pytest.raises(ValueError, match="got -4"):
        result.get(timeout=5)  # the unreached step reports the chain's error


def test_an_immutable_signature_ignores_the_parent_result(celery_worker):
    """An immutable signature (`.si()`) in a chain does not receive the parent's result; the
    step before it still runs first, on its own arguments."""
    result = then_fixed(5).apply_async()
    assert result.get(timeout=30) == 101
    assert result.parent.get(timeout=5) == 6  # add(5, 1) ran before it


@pytest.mark.filterwarnings("ignore:Exception raised outside body:RuntimeWarning")
def test_why_a_mutable_signature_gets_the_parent_result_prepended(celery_worker):
    """add.s(100, 1) after a step becomes add(6, 100, 1): too many arguments."""
    result = chain(add.s(5, 1), add.s(100, 1)).apply_async()
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        result.get(timeout=30)


def test_chord_results_arrive_in_header_order_whatever_the_finishing_order(
    shared_prefork_worker,
):
    """The first header task sleeps longest, so it finishes last; the body still gets it first.

    The shared worker has three children, but one may still be starting (an earlier test
    SIGKILLs children and the pool replaces them). With two children the third task runs
    after the second, so only "the first finishes last" is certain, not the full reversal.
    """
    queue = shared_prefork_worker.queue
    numbers = [6, 2, 1]  # 3 s, 1 s and 0.5 s of work at the stand-in's pace
    assert [n * SECONDS_PER_UNIT for n in numbers] == [3.0, 1.0, 0.5]
    result = squares_in_order(numbers).apply_async(queue=queue)

    assert result.get(timeout=60) == [36, 4, 1]  # header order
    header = result.parent.results
    finished = [r.get(timeout=5) for r in sorted(header, key=lambda r: r.date_done)]
    assert finished[-1] == 36  # the first header task finished last: not header order
    assert squares_total(numbers).apply_async(queue=queue).get(timeout=60) == 41


def rows() -> dict[str, int]:
    """How many rows each model of the app holds: whatever a step could have written."""
    return {m.__name__: m.objects.count() for m in apps.get_app_config("task_design").get_models()}


@pytest.mark.proves_idempotent(task=add)
@pytest.mark.proves_idempotent(task=square)
@pytest.mark.proves_idempotent(task=check_positive)
@pytest.mark.proves_idempotent(task=total)
@pytest.mark.proves_idempotent(task=collect)
def test_a_step_delivered_again_returns_the_same_and_writes_nothing(shared_prefork_worker):
    """Each step's message delivered again to a prefork worker, with its task id (a
    redelivery): the same value, and no row written anywhere in the app. A step whose answer
    counts earlier runs (a counter kept in Redis) or that writes a row fails this."""
    wp = shared_prefork_worker
    calls = [
        (add, (2, 3), 5),
        (square, (4,), 16),
        (check_positive, (7,), 7),
        (total, ([1, 2, 3],), 6),
        (collect, ([3, 1, 2],), [3, 1, 2]),
    ]
    before = rows()
    firsts = [task.apply_async(args, queue=wp.queue) for task, args, _ in calls]
    assert [first.get(timeout=30) for first in firsts] == [value for *_, value in calls]
    for (task, args, value), first in zip(calls, firsts, strict=True):
        assert deliver_again(wp, task, args, first.id) == value, task.name
    assert rows() == before


@pytest.mark.proves_idempotent(task=record_failure)
def test_the_error_callback_delivered_again_records_the_failure_once(shared_prefork_worker):
    """The error callback delivered again (same task id), and called again for the same
    failed task (a new message): one row. With a plain `create()`, three."""
    wp = shared_prefork_worker
    failed = f"failed-{uuid.uuid4()}"
    recorded = f"canvas step {failed} failed; recorded for follow-up"
    first = record_failure.apply_async((failed,), queue=wp.queue)
    assert first.get(timeout=30) is None
    logged = wp.log().count(recorded)
    assert logged >= 1
    assert deliver_again(wp, record_failure, (failed,), first.id) is None
    assert record_failure.apply_async((failed,), queue=wp.queue).get(timeout=30) is None
    assert list(ChainFailure.objects.values_list("task_id", flat=True)) == [failed]
    assert wp.log().count(recorded) == logged  # nobody is asked to follow up twice


def test_a_chord_without_a_result_backend_fails_at_apply_async(monkeypatch):
    """No result backend: the chord cannot count its header, and says so before publishing."""
    for var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):  # they beat an app's own config
        monkeypatch.delenv(var, raising=False)
    app = Celery("no-backend", broker="memory://", set_as_current=False)  # no result backend
    header = group(app.signature(square.name, (n,)) for n in (1, 2))
    with pytest.raises(NotImplementedError, match="Starting chords requires a result backend"):
        chord(header, app.signature(total.name)).apply_async()


def test_a_failing_header_task_fails_the_chord(celery_worker):
    """The body never runs and stores ChordError; get() raises the header's error (the
    ValueError itself on the Redis backend, wrapped in ChordError on the cache backend)."""
    result = chord([check_positive.s(1), check_positive.s(-1)], total.s()).apply_async()
    with pytest.raises((ValueError, ChordError), match="got -1"):
        result.get(timeout=30)
    wait_until(lambda: result.state == "FAILURE", timeout=30, what="the chord body FAILURE")
    assert isinstance(result.result, ChordError)


def test_a_chords_error_callback_runs_once_with_the_bodys_id(celery_worker, published):
    """With Celery's default, link_error on a chord is linked to the body only (and warns of the
    pending change); a failing header task fails the body, whose callback records the body's id,
    once: not the failed header task's id."""
    with pytest.warns(CPendingDeprecationWarning, match="task_allow_error_cb_on_chord_header"):
        workflow = checked_total([1, -1, -2])
    result = workflow.apply_async()
    with pytest.raises((ValueError, ChordError)):
        result.get(timeout=30)
    wait_until(lambda: ChainFailure.objects.exists(), timeout=30, what="the error callback")
    # No wait for a second one: the solo worker writes that row only after it has finished the
    # header task whose failure published the callback, so every callback (one per failed
    # header task, if they were linked there) was published by then, and counted here.
    assert [p["name"] for p in published].count(record_failure.name) == 1
    assert list(ChainFailure.objects.values_list("task_id", flat=True)) == [result.id]


@pytest.mark.antipattern(task=total_by_waiting)
def test_why_get_inside_a_task_is_refused(shared_prefork_worker, celery_worker):
    """On a prefork worker, result.get() inside a task raises instead of risking a deadlock."""
    result = total_by_waiting.apply_async(([1, 2, 3],), queue=shared_prefork_worker.queue)
    with pytest.raises(RuntimeError, match=r"Never call result.get\(\) within a task"):
        result.get(timeout=60)
