"""Proof for docs/django-integration/request-correlation.md, on the in-thread worker."""

import io
import logging
import uuid
from pathlib import Path

import pytest
from celery import Task, shared_task
from celery.result import AsyncResult
from celery.signals import task_postrun

from snippets.django_integration.correlation_log import (
    LOGGING,
    CorrelationIdFilter,
    correlation_id,
)
from snippets.django_integration.request_correlation import (
    CORRELATION_HEADER,
    flaky_step,
    record_step,
    record_step_by_celery_id,
)
from tests.harness.celery import WorkerProcess
from tests.harness.process import fresh_python
from tests.harness.redelivery import deliver_again
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/django-integration/pipeline/"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def correlated_logging():
    """A handler built as the page's LOGGING builds it, on the "snippets" logger for the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(logging.Formatter(LOGGING["formatters"]["plain"]["format"]))
    logger = logging.getLogger("snippets")
    logger.addHandler(handler)
    yield stream.getvalue
    logger.removeHandler(handler)


def ids_of(published: list[dict]) -> dict[str, str]:
    return {p["id"]: p["headers"].get(CORRELATION_HEADER) for p in published}


def first_delivery(task: Task, step: str, request_id: str, wp: WorkerProcess) -> AsyncResult:
    """Publish `task(step)` as from inside request `request_id` to the worker subprocess, and
    wait until that first run has returned the id (`deliver_again` then waits for its log line)."""
    token = correlation_id.set(request_id)
    try:
        first = task.apply_async((step,), queue=wp.queue)
    finally:
        correlation_id.reset(token)
    assert first.get(timeout=30) == request_id
    return first


def test_every_task_of_a_request_and_its_children_carry_the_request_id(
    celery_worker, client, published, correlated_logging
):
    """one request with `X-Request-ID: req-42`: seven messages (chain head and its second step,
    three group parts, a task and its retry, the second step and the retry published by the worker)
    all carry `req-42`, every task sees it, and all seven log lines print `[req-42]`."""
    response = client.get(URL, headers={"X-Request-ID": "req-42"})
    assert response["X-Request-ID"] == "req-42"
    body = response.json()

    # chain: the last step's result; group: every part; each task returns the id it ran under
    assert AsyncResult(body["chain"]).get(timeout=20) == "req-42"
    assert [AsyncResult(i).get(timeout=20) for i in body["group"]] == ["req-42"] * 3
    assert AsyncResult(body["retried"]).get(timeout=20) == "req-42"

    # 1 chain head + 3 parts + 1 flaky in the view, then the chain's second step and the retry,
    # both published by the worker: every message carries the request's id.
    headers = ids_of(published)
    assert len(published) == 7
    assert set(headers.values()) == {"req-42"}

    lines = [line for line in correlated_logging().splitlines() if "snippets.pipeline" in line]
    assert len(lines) == 7  # extract, load, 3 parts, 2 attempts of flaky
    assert all("[req-42]" in line for line in lines)
    # the retry's line counts its attempt from the message's retries, as the first one does
    attempts = [line.rsplit(" ", 1)[1] for line in lines if "step flaky, attempt" in line]
    assert attempts == ["1", "2"]


def test_a_retried_task_keeps_the_id(celery_worker, published):
    """the retry message carries the id, the second attempt sees it."""
    token = correlation_id.set("retry-me")  # as inside a request
    try:
        result = flaky_step.delay("flaky")
    finally:
        correlation_id.reset(token)
    assert result.get(timeout=20) == "retry-me"
    assert [p["headers"]["retries"] for p in published] == [0, 1]  # first attempt, then retry
    assert set(ids_of(published).values()) == {"retry-me"}


def test_a_task_published_outside_a_request_gets_a_fresh_id(celery_worker, published):
    """two tasks, two different ids."""
    first, second = record_step.delay("cron"), record_step.delay("cron")
    seen = [first.get(timeout=20), second.get(timeout=20)]
    assert None not in seen
    assert seen[0] != seen[1]  # each its own id
    assert seen == [ids_of(published)[first.id], ids_of(published)[second.id]]


def test_a_generated_id_is_returned_and_a_malformed_one_replaced(celery_worker, client, published):
    """no header: a generated id in the response; a header with a newline: replaced."""
    generated = client.get(URL)["X-Request-ID"]
    assert len(generated) == 32
    injected = client.get(URL, headers={"X-Request-ID": "x\nFAKE LOG LINE"})["X-Request-ID"]
    assert "\n" not in injected
    assert injected != generated
    assert set(ids_of(published).values()) >= {generated, injected}


def test_the_worker_does_not_leak_an_id_into_the_next_task(celery_worker):
    """What the worker thread holds once a task is over (a receiver connected after the
    page's runs after it): without clear_correlation_id it would still be the task's id, and
    anything the worker logs or publishes between tasks would carry it."""
    after_task: list[str | None] = []
    first = uuid.uuid4().hex  # the shared worker may run a stray task of an earlier test meanwhile

    def record(task_id: str, **_: object) -> None:
        if task_id == first:
            after_task.append(correlation_id.get())

    task_postrun.connect(record, weak=False)
    token = correlation_id.set("first-request")
    try:
        assert record_step.apply_async(("a",), task_id=first).get(timeout=20) == "first-request"
        wait_until(lambda: after_task, what="task_postrun after the task")  # sent after SUCCESS
    finally:
        correlation_id.reset(token)
        task_postrun.disconnect(record)
    assert after_task == [None]
    later = record_step.delay("b")
    assert later.get(timeout=20) not in (None, "first-request")


@shared_task(name="tests.django_integration.failing_step")
def failing_step(step: str) -> None:
    """Any task that fails: the page's steps take no flag to fail on."""
    raise ValueError(f"step {step} failed")


def test_a_failure_is_logged_with_the_request_id(celery_worker, caplog):
    """the failure logger's record has it."""
    token = correlation_id.set("req-failing")
    try:
        result = failing_step.delay("broken")
    finally:
        correlation_id.reset(token)
    failed = pytest.raises(ValueError, match="step broken failed")
    with caplog.at_level(logging.ERROR, logger="snippets.tasks"), failed:
        result.get(timeout=20)
    # The result is stored before task_failure is sent: wait for the record, do not race it.
    records = lambda: [r for r in caplog.records if r.name == "snippets.tasks"]  # noqa: E731
    [record] = wait_until(records, 20, what="the failure record", interval=0.05)
    assert record.correlation_id == "req-failing"
    assert record.task_id == result.id


def test_the_logging_settings_print_the_id():
    """The page's LOGGING dict, applied by django.setup() (over Django's own default logging,
    before any app is loaded), so the filter's module must not import models: it is imported
    here before any settings exist. Django's own loggers keep logging next to it (with
    disable_existing_loggers=True, `runserver`'s request lines would vanish)."""
    script = (
        "import logging\n"
        "import django\n"
        "from django.conf import settings\n"
        "from snippets.django_integration.correlation_log import LOGGING, correlation_id\n"
        "settings.configure(LOGGING=LOGGING)  # no apps, no project settings\n"
        "django.setup()\n"
        "logging.getLogger('snippets.demo').info('outside')\n"
        "logging.getLogger('django.server').info('\"GET / HTTP/1.1\" 200 2')\n"
        "correlation_id.set('req-7')\n"
        "logging.getLogger('snippets.demo').info('inside')\n"
    )
    out = fresh_python(script, {"PYTHONPATH": str(ROOT)})  # no settings, no app registry
    assert out.returncode == 0, out.stderr
    outside, server, inside = out.stderr.splitlines()
    assert outside == "INFO snippets.demo [-] outside"
    assert inside == "INFO snippets.demo [req-7] inside"
    assert server.endswith('] "GET / HTTP/1.1" 200 2')  # Django's runserver line, its own format


@pytest.mark.antipattern(task=record_step_by_celery_id)
def test_why_celery_request_correlation_id_is_not_the_request_id(celery_worker, published):
    """Two steps of one request: Celery's correlation_id differs per task, and so do its
    `root_id` and `parent_id` headers (they link a task to the task that published it, and a
    request is not a task); ours does not differ."""
    token = correlation_id.set("req-9")
    try:
        steps = [record_step_by_celery_id.delay(s) for s in ("a", "b")]
        ours = [record_step.delay(s) for s in ("a", "b")]
    finally:
        correlation_id.reset(token)
    seen = [r.get(timeout=20) for r in steps]
    assert seen == [steps[0].id, steps[1].id]  # each task's own id: nothing to join on
    headers = [p["headers"] for p in published if p["name"] == record_step_by_celery_id.name]
    assert [(h["root_id"], h["parent_id"]) for h in headers] == [(r.id, None) for r in steps]
    assert [r.get(timeout=20) for r in ours] == ["req-9", "req-9"]


@pytest.mark.proves_idempotent(task=record_step)
def test_a_step_delivered_again_runs_under_the_request_id_it_was_sent_with(
    shared_prefork_worker,
):
    """The same message delivered again (same task id, same headers: what the broker hands back)
    to a `celery worker` subprocess, after another request's task ran there: the step logs and
    returns the id its message carries, as the first run did; it has no other effect.

    Fails if the worker took the id from anywhere but the message (what a child held before, or
    a new one per run)."""
    wp = shared_prefork_worker
    first = first_delivery(record_step, "extract", "req-first", wp)
    token = correlation_id.set("req-other")  # another request's task runs in between
    try:
        assert record_step.apply_async(("other",), queue=wp.queue).get(timeout=30) == "req-other"
    finally:
        correlation_id.reset(token)
    headers = {CORRELATION_HEADER: "req-first"}  # the first message's, as on the wire
    assert deliver_again(wp, record_step, ("extract",), first.id, headers=headers) == "req-first"


@pytest.mark.proves_idempotent(task=flaky_step)
def test_a_retried_step_delivered_again_retries_once_more_and_keeps_the_id(
    shared_prefork_worker,
):
    """The first attempt's message delivered again (retries 0, the same id and header) retries
    once more, as the first delivery did, and its retry ends with the same id: two attempts per
    delivery, within max_retries=1 each, the same result. The step has no other effect.

    Fails if the attempt count came from anywhere but the message (the redelivery would not
    retry, or would exceed max_retries and fail)."""
    wp = shared_prefork_worker
    first = first_delivery(flaky_step, "flaky", "req-flaky", wp)
    headers = {CORRELATION_HEADER: "req-flaky"}
    assert deliver_again(wp, flaky_step, ("flaky",), first.id, headers=headers) == "req-flaky"
    # One retry per delivery. The retry line comes from the pool child that ran the attempt, the
    # success line from the one that ran the retry: the second can reach the log first (RC of
    # stop 29 read 1), so wait for the line, then count.
    retries = lambda: wp.log().count(f"[{first.id}] retry:")  # noqa: E731
    wait_until(lambda: retries() >= 2, 10, what="the redelivery's retry line", context=wp)
    assert retries() == 2
