"""Proof for docs/troubleshooting/results-and-waiting.md: each message reproduced on the real
stack (a prefork worker subprocess, the in-thread worker, the configured broker and result
backend), then the fix shown without it."""

from __future__ import annotations

import json
import re
import time
import types
import uuid

import pytest
from celery import Celery, chord
from celery.backends.redis import RedisBackend
from celery.exceptions import ChordError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from django.test import RequestFactory

from snippets.configuration.models import TaskRun
from snippets.configuration.result_backends import build_export, export_status, record_event
from snippets.task_design.canvas import (
    check_positive,
    square,
    squares_total,
    total,
    total_by_waiting,
)
from snippets.task_design.models import ChainFailure
from snippets.troubleshooting import results_and_waiting as rw
from tests.harness.celery import delete_queues
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

WOULD_BLOCK = "Never call result.get() within a task!"
TIMED_OUT = "The operation timed out."
NO_BACKEND = "No result backend is configured."
DEPENDENCY_RAISED = "Dependency {} raised ValueError('expected a positive number, got -1')"


@pytest.mark.antipattern("snippets/troubleshooting/results_and_waiting.py:view-waits")
def test_why_result_get_in_a_view_holds_the_request_until_it_times_out(celery_worker, monkeypatch):
    """With the page's budget and a free worker, the view answers only after the whole 1 s
    task (square(2) at the stand-in's pace) ran. A 1.5 s task (square(3)) and a 0.5 s budget:
    the view raises `TimeoutError: The operation timed out.`; the request had to wait all of it."""
    started = time.monotonic()
    answered = rw.square_waiting(RequestFactory().get("/square/2"), 2)  # REQUEST_WAIT as shown
    assert json.loads(answered.content) == {"square": 4}
    assert time.monotonic() - started >= 1.0  # the request held while the task ran

    monkeypatch.setattr(rw, "REQUEST_WAIT", 0.5)  # the request's budget, shorter than the task
    request = RequestFactory().get("/square/3")
    started = time.monotonic()
    with pytest.raises(CeleryTimeoutError) as raised:
        rw.square_waiting(request, 3)
    assert str(raised.value) == TIMED_OUT
    assert time.monotonic() - started >= 0.5  # the web worker was held all that time


def test_a_view_that_returns_the_id_answers_at_once_and_the_status_view_reports(celery_worker):
    """202 with the id before the 2 s task could finish; the status view reads SUCCESS later."""
    request = RequestFactory().get("/square/4")
    started = time.monotonic()
    response = rw.square_start(request, 4)
    assert time.monotonic() - started < 1.5  # did not wait for the 2 s job
    assert response.status_code == 202
    task_id = json.loads(response.content)["task_id"]

    def done() -> dict | None:
        body = json.loads(rw.square_status(request, task_id).content)
        return body if body["state"] == "SUCCESS" else None

    assert wait_until(done, 30, what="the status view reports SUCCESS") == {
        "state": "SUCCESS",
        "square": 16,
    }


def test_the_status_view_answers_from_one_read_of_the_backend(celery_worker, monkeypatch):
    """The task finishes between two reads of the backend (forced here: the first read
    stores the result in the real backend right after it): the answer is the state that read
    saw, never SUCCESS without the value, as the view read twice (successful(), then .state)."""
    request = RequestFactory().get("/square/5")
    task_id = str(uuid.uuid4())
    backend = square.backend
    read = backend.get_task_meta

    def read_then_finish(task_id: str, cache: bool = True) -> dict:
        meta = read(task_id, cache=cache)
        if meta["status"] == "PENDING":
            backend.store_result(task_id, 25, "SUCCESS")  # the worker finishes just now
        return meta

    monkeypatch.setattr(backend, "get_task_meta", read_then_finish)
    assert json.loads(rw.square_status(request, task_id).content) == {"state": "PENDING"}
    assert json.loads(rw.square_status(request, task_id).content) == {
        "state": "SUCCESS",
        "square": 25,
    }


def failed_here(log: str) -> list[str]:
    """Ids of the tasks that raised unexpectedly among those `log` shows received: on a shared
    worker, a line an earlier test's task logged late (after that test had its result) is not
    this test's."""
    received = set(re.findall(r"\[([\w-]+)\] received$", log, re.M))
    return [i for i in re.findall(r"\[([\w-]+)\] raised unexpected", log) if i in received]


@pytest.mark.antipattern(task=total_by_waiting)
def test_why_result_get_inside_a_task_raises_on_a_prefork_worker(shared_prefork_worker):
    """The worker logs the task failing with `RuntimeError: Never call result.get() within a
    task!`; the same sum as a chord runs."""
    wp = shared_prefork_worker  # result.get() is refused only in a pool child
    since = len(wp.log())  # the session's worker: its log up to here is other tests'
    result = total_by_waiting.apply_async(([1, 2, 3],), queue=wp.queue)
    with pytest.raises(RuntimeError) as raised:
        result.get(timeout=60)
    assert str(raised.value).startswith(WOULD_BLOCK)
    failed = f"{total_by_waiting.name}[{result.id}] raised unexpected"
    assert f"{failed}: RuntimeError('{WOULD_BLOCK}" in wp.wait_for_log(failed)

    fixed = squares_total([1, 2, 3]).apply_async(queue=wp.queue)
    assert fixed.get(timeout=60) == 14
    assert failed_here(wp.log()[since:]) == [result.id]  # the anti-pattern's alone


@pytest.mark.services("broker")
@pytest.mark.antipattern("snippets/troubleshooting/results_and_waiting.py:misnamed-setting")
def test_why_a_result_backend_setting_without_the_namespace_is_never_read(celery_app, monkeypatch):
    """`RESULT_BACKEND` under namespace="CELERY" is ignored: a published task's `.get()` raises
    `NotImplementedError: No result backend is configured.`; `CELERY_RESULT_BACKEND` works."""
    backend_url = celery_app.conf.result_backend
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)  # it beats any setting
    nobody = f"ts-nobody-{uuid.uuid4().hex[:8]}"
    assert rw.RESULT_BACKEND == rw.CELERY_RESULT_BACKEND  # one URL: only the names differ
    page = Celery("page", set_as_current=False)
    page.config_from_object(rw, namespace="CELERY")  # the snippet's lines as the settings
    assert page.conf.result_backend == rw.CELERY_RESULT_BACKEND  # the CELERY_ line is read
    assert isinstance(page.backend, RedisBackend)  # a backend's URL (parsed, not connected)

    misnamed = Celery("misnamed", set_as_current=False)
    misnamed.config_from_object(types.SimpleNamespace(RESULT_BACKEND=backend_url), "CELERY")
    try:
        sent = misnamed.send_task("snippets.task_design.canvas.add", (1, 2), queue=nobody)
        with pytest.raises(NotImplementedError) as raised:
            sent.get(timeout=1)
        assert str(raised.value).startswith(NO_BACKEND)
        assert misnamed.conf.result_backend is None

        named = Celery("named", set_as_current=False)
        named.config_from_object(types.SimpleNamespace(CELERY_RESULT_BACKEND=backend_url), "CELERY")
        assert named.conf.result_backend == backend_url
        assert named.AsyncResult(sent.id).state == "PENDING"  # reads the backend, no error
    finally:
        delete_queues(celery_app, nobody)


def test_pending_forever_three_ways_and_a_status_that_tells_them_apart(celery_app, celery_worker):
    """A finished `ignore_result` task, an id never sent, a task no worker consumes: all three
    read PENDING. A task that stores SENT on publish reads "queued" instead."""
    ran = record_event.delay("ts-pending")  # ignore_result=True
    wait_until(lambda: TaskRun.objects.filter(task_id=ran.id).exists(), what="the task ran")
    assert ran.state == "PENDING"  # it finished; nothing was stored
    assert AsyncResult(str(uuid.uuid4()), app=celery_app).state == "PENDING"  # never sent

    nobody = f"ts-nobody-{uuid.uuid4().hex[:8]}"
    try:
        waiting = build_export.apply_async((7,), queue=nobody)  # no worker consumes this queue
        assert export_status(waiting.id) == "queued"  # SENT: published, not yet started
        assert export_status(str(uuid.uuid4())) == "unknown or expired"
    finally:
        delete_queues(celery_app, nobody)


def failed_part(result) -> str:
    """The id of the chord's header task that failed."""
    [failed] = [r.id for r in result.parent.results if r.state == "FAILURE"]
    return failed


def test_why_a_chord_whose_part_fails_never_runs_its_body_unless_an_errback_says_so(
    celery_worker,
):
    """One part raises: the body never runs and stores `ChordError: Dependency … raised …`,
    and nothing else tells anyone. With an errback on the body, the failure is recorded."""
    silent = chord([check_positive.s(1), check_positive.s(-1)])(total.s())
    wait_until(lambda: silent.state == "FAILURE", timeout=30, what="the body's FAILURE")
    assert isinstance(silent.result, ChordError)
    assert str(silent.result) == DEPENDENCY_RAISED.format(failed_part(silent))
    assert not ChainFailure.objects.exists()  # no one was told

    recorded = rw.total_of_positives([1, -1])
    wait_until(
        lambda: ChainFailure.objects.filter(task_id=recorded.id).exists(),
        timeout=30,
        what="the errback's record",
    )
    wait_until(lambda: recorded.state == "FAILURE", timeout=30, what="the body's FAILURE")
    assert str(recorded.result) == DEPENDENCY_RAISED.format(failed_part(recorded))
    assert rw.total_of_positives([1, 2]).get(timeout=30) == 3  # no failure: the body runs
