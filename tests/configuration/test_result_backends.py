"""Proof for docs/configuration/result-backends.md: PENDING for unknown ids, expiry, chords,
ignore_result — on the configured backend (Redis in CI) and real workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from celery import Celery, chord
from celery.exceptions import ChordError
from celery.result import AsyncResult

from snippets.configuration import quiet_results, result_backends
from snippets.configuration.models import TaskRun
from snippets.configuration.result_backends import (
    add_up,
    build_export,
    count_in_parallel,
    count_rows,
    count_rows_quietly,
    export_status,
    export_status_naive,
    record_event,
)
from tests.configuration.helpers import settings_env
from tests.harness.celery import delete_queues
from tests.harness.redelivery import deliver_again, wait_succeeded
from tests.harness.services import REQUIRE_SERVICES
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def redis_backend(celery_app) -> redis.Redis:
    url = celery_app.conf.result_backend
    if not url.startswith("redis"):  # the embedded run's cache+memory://; CI must have Redis
        reason = f"needs a Redis result backend, not {url}"
        if REQUIRE_SERVICES:
            pytest.fail(f"SNIPPETS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
        pytest.skip(reason)
    return redis.Redis.from_url(url)


def test_an_id_nobody_ever_sent_reports_pending(celery_app):
    """`PENDING` for an id never sent."""
    assert AsyncResult("no-such-task-id", app=celery_app).state == "PENDING"


@pytest.mark.services("redis")
def test_a_result_stored_under_the_page_settings_expires_in_a_day():
    """The block as Celery reads settings: a stored result's Redis key lives one day."""
    app = Celery("snippets", set_as_current=False)
    block = {k: v for k, v in vars(result_backends).items() if k.startswith("CELERY_")}
    app.conf.update({k.removeprefix("CELERY_").lower(): v for k, v in block.items()})
    assert (app.conf.result_chord_expires, app.conf.task_track_started) == (7200, True)
    assert app.conf.result_backend.startswith("redis")  # CELERY_RESULT_BACKEND of the run
    app.backend.store_result("page-settings-expiry", 1, "SUCCESS")
    try:
        key = app.backend.get_key_for_task("page-settings-expiry")
        ttl = redis.Redis.from_url(app.conf.result_backend).ttl(key)
        assert timedelta(days=1).total_seconds() - 60 < ttl <= timedelta(days=1).total_seconds()
    finally:
        app.backend.forget("page-settings-expiry")


def test_a_chord_joins_its_parts_on_the_backend(celery_worker):
    """10 + 20 + 30 = 60."""
    assert count_in_parallel([1, 2, 3]).get(timeout=60) == 60


@pytest.mark.antipattern(task=count_rows_quietly)
def test_why_a_chord_over_ignore_result_parts_depends_on_the_backend(celery_worker, celery_app):
    """Redis joins chord parts natively (their results go to a list), so ignore_result on a
    part goes unnoticed; the cache backend (the embedded run's) joins by reading each part's
    stored result, never finds them, and the chord fails (the database backend: below)."""
    result = chord(count_rows_quietly.s(shard) for shard in (1, 2, 3))(add_up.s())
    if celery_app.backend.supports_native_join and celery_app.conf.result_backend.startswith(
        "redis"
    ):
        assert result.get(timeout=60) == 60
    else:
        with pytest.raises(ChordError):
            result.get(timeout=60)
    assert count_rows_quietly.delay(4).get(timeout=30) is None  # outside a chord: ignored


@pytest.mark.antipattern(task=count_rows_quietly)
def test_why_on_the_django_db_backend_a_chord_over_ignore_result_parts_never_completes(
    worker_process, monkeypatch
):
    """django-celery-results' `django-db`, the database backend Django projects deploy: the parts
    run and count the chord down to zero, the last finds no stored result (`deps.ready()` is
    False) and returns. No callback is sent and nothing fails: the chord stays `PENDING`."""
    from django_celery_results.models import ChordCounter

    monkeypatch.setenv("CELERY_RESULT_BACKEND", "django-db")  # Celery reads it before settings
    wp = worker_process(env={"CELERY_RESULT_BACKEND": "django-db"})
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    parts = [app.signature(count_rows_quietly.name, (s,), queue=wp.queue) for s in (1, 2, 3)]
    result = chord(parts)(app.signature(add_up.name, queue=wp.queue))
    [group_id] = ChordCounter.objects.values_list("group_id", flat=True)
    assert group_id == result.parent.id  # counting down from 3
    wait_until(
        lambda: wp.log().count(f"{count_rows_quietly.name}[") >= 6,  # received + succeeded x 3
        what="the three parts to run",
        context=wp,
    )
    assert wp.log().count("succeeded") == 3
    assert not ChordCounter.objects.exists()  # the last part counted it down to zero...
    assert f"{add_up.name}[" not in wp.log()  # ...and sent no callback (sent before "succeeded")
    assert result.state == "PENDING"  # no ChordError: nobody is told


@pytest.mark.antipattern("snippets/configuration/result_backends.py:antipattern")
def test_why_pending_reads_as_queued_for_an_id_that_does_not_exist(celery_app):
    """the naive status lies."""
    assert export_status_naive("a-typo-in-the-url") == "queued"  # the lie
    assert export_status("a-typo-in-the-url") == "unknown or expired"


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        ("REVOKED", "cancelled"),
        ("REJECTED", "failed"),
        ("IGNORED", "stopped"),
        ("RETRY", "running"),
        ("PROGRESS", "progress"),
    ],
)
def test_every_final_state_is_shown_as_final(celery_app, state, shown):
    """A revoked export is "cancelled", not "in progress" for ever: each state, stored in the
    run's result backend."""
    task_id = f"export-{state.lower()}"
    celery_app.backend.store_result(task_id, None, state)
    try:
        assert export_status(task_id) == shown
    finally:
        celery_app.backend.forget(task_id)


@pytest.mark.services("broker")
def test_a_published_task_reads_queued_until_a_worker_runs_it(celery_app, celery_worker):
    """`SENT` → "queued", then "done"."""
    nobody = "configuration-nobody-consumes"
    try:
        waiting = build_export.apply_async((1,), queue=nobody)
        assert export_status(waiting.id) == "queued"  # SENT, stored before the message left
    finally:
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_delete(nobody)
    done = build_export.delay(2)
    assert done.get(timeout=30) == "export-2.csv"
    assert export_status(done.id) == "done"
    assert export_status_naive(done.id) == "success"


def test_ignore_result_runs_the_task_and_stores_nothing(celery_worker, celery_app):
    """the row is written, no Redis key."""
    r = redis_backend(celery_app)
    result = record_event.delay("signup")
    [run] = wait_until(lambda: list(TaskRun.objects.filter(task_id=result.id)), what="the run")
    assert run.key == "signup"
    assert result.state == "PENDING"  # it ran, and reports PENDING: there is nothing to read
    assert not r.exists(f"celery-task-meta-{result.id}")


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(CELERY_RESULT_EXPIRES=2)",
    reason="2 s instead of a day, to see the expiry",
)
def test_results_expire_and_then_read_as_pending(worker_process, celery_app):
    """TTL ≤ 2 s, key gone, `PENDING`, "queued"."""
    r = redis_backend(celery_app)
    wp = worker_process(env=settings_env(CELERY_RESULT_EXPIRES=2))  # seconds, for the test
    result = add_up.apply_async(([1, 2],), queue=wp.queue)
    assert result.get(timeout=30) == 3
    key = f"celery-task-meta-{result.id}"
    assert 0 < r.ttl(key) <= 2  # Redis expires the key itself: no cleanup job needed
    wait_until(lambda: not r.exists(key), timeout=30, what="the result to expire")
    assert AsyncResult(result.id, app=celery_app).state == "PENDING"  # as if never sent
    assert export_status_naive(result.id) == "queued"  # a finished task shown as queued


def test_a_chord_without_a_result_backend_cannot_start(monkeypatch):
    """`NotImplementedError`."""
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    app = Celery("no-results", set_as_current=False, broker="memory://")

    @app.task(shared=False)
    def part(n: int) -> int:
        return n

    @app.task(shared=False)
    def callback(values: list[int]) -> int:
        return sum(values)

    with pytest.raises(NotImplementedError, match="result backend"):
        chord([part.s(1), part.s(2)])(callback.s())


def test_the_copied_settings_block_stops_without_the_variable(monkeypatch):
    """The block as a reader pastes it, run without CELERY_RESULT_BACKEND, stops and names the
    variable instead of falling back to a Redis on this host (the audit's fallback-url)."""
    from docs.hooks.includes import expand

    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    block = expand('--8<-- "snippets/configuration/result_backends.py:settings"')
    with pytest.raises(KeyError, match="CELERY_RESULT_BACKEND"):
        exec(block, {})  # the page's own block


@pytest.mark.proves_idempotent(task=count_rows)
@pytest.mark.proves_idempotent(task=add_up)
def test_a_chord_part_delivered_again_mid_chord_is_counted_once(shared_prefork_worker, celery_app):
    """A part delivered again while the chord waits for another (same id, group and callback, as
    the broker hands back an unacked message): Celery 5.7's Redis backend records a part once
    per task id, so the join still waits for the third part and adds up 10 + 20 + 30. Counted
    twice, 10 + 10 + 20 would complete it early: 40. The callback delivered again adds up the
    same total.

    Fails if either task's result depended on how often it ran (the stored values change), or if
    the part's second run counted toward the join."""
    wp = shared_prefork_worker
    held = f"{wp.queue}-held"  # the third part waits here until the redelivery is over
    callback = add_up.s().set(queue=wp.queue)
    parts = [count_rows.s(1).set(queue=wp.queue), count_rows.s(2).set(queue=wp.queue)]
    result = chord([*parts, count_rows.s(3).set(queue=held)])(callback)
    first, second, _held = result.parent.results
    try:
        wait_succeeded(wp, first.id, 1)
        wait_succeeded(wp, second.id, 1)
        callback.freeze(result.id)  # the callback signature the part's message carries
        count_rows.apply_async(
            (1,), task_id=first.id, group_id=result.parent.id, group_index=0, chord=callback,
            queue=wp.queue,
        )  # fmt: skip
        assert wait_succeeded(wp, first.id, 2) == [repr(10)] * 2
        # Had it counted again, the callback would be queued ahead of this later message.
        assert count_rows.apply_async((0,), queue=wp.queue).get(timeout=30) == 0
        assert f"[{result.id}] received" not in wp.log()

        celery_app.control.add_consumer(held, destination=[wp.hostname], reply=True)
        assert result.get(timeout=60) == 60
        assert wp.log().count(f"[{result.id}] received") == 1
    finally:
        celery_app.control.cancel_consumer(held, destination=[wp.hostname], reply=True)
        delete_queues(celery_app, held)

    assert deliver_again(wp, add_up, ([10, 20, 30],), result.id) == 60


@pytest.mark.proves_idempotent(task=build_export)
def test_an_export_delivered_again_ends_done_with_the_same_file(shared_prefork_worker):
    """The same message twice: the same file name, and the status page reads "done".

    Fails if the export's result depended on how often it ran."""
    wp = shared_prefork_worker
    first = build_export.apply_async((3,), queue=wp.queue)
    assert first.get(timeout=30) == "export-3.csv"
    assert deliver_again(wp, build_export, (3,), first.id) == "export-3.csv"
    assert export_status(first.id) == "done"


@pytest.mark.proves_idempotent(task=record_event)
def test_an_event_delivered_again_is_recorded_once(shared_prefork_worker, celery_app):
    """One row per message: the redelivery finds the row its first run wrote (get_or_create on
    the task id).

    Fails with `create()`: two rows for one event."""
    wp = shared_prefork_worker
    first = record_event.apply_async(("signup",), queue=wp.queue)
    [run] = wait_until(lambda: list(TaskRun.objects.filter(task_id=first.id)), what="the run")
    assert run.hostname == wp.hostname  # the first run's row says which worker ran it
    assert deliver_again(wp, record_event, ("signup",), first.id) is None
    assert list(TaskRun.objects.filter(task_id=first.id)) == [run]
    assert not redis_backend(celery_app).exists(f"celery-task-meta-{first.id}")


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(project settings + the quiet_results block)",
    reason="the page's block under test",
)
@pytest.mark.deviation(
    "--include=tests.configuration.quiet_tasks",
    reason="two tasks of the proof's own: one that declares nothing, one that opts in",
)
def test_with_ignore_result_as_the_default_only_a_task_that_opts_in_stores_a_result(
    worker_process, celery_app
):
    """`CELERY_TASK_IGNORE_RESULT = True` on a worker: a plain task runs and stores nothing; one
    declared with `ignore_result=False` stores SUCCESS, and `result_extended` adds its name and
    arguments. `forget()` deletes it at once."""
    block = {k: v for k, v in vars(quiet_results).items() if k.startswith("CELERY_")}
    wp = worker_process(
        env=settings_env(**block), args=["--include=tests.configuration.quiet_tasks"]
    )
    # send_task: the message carries no ignore_result of this process's (whose settings lack
    # the block), so the worker's settings decide, as when the web process shares them.
    quiet = celery_app.send_task("quiet.plain", (1,), queue=wp.queue)
    stored = celery_app.send_task("quiet.read", (2,), queue=wp.queue)
    assert stored.get(timeout=30) == 2
    assert wait_succeeded(wp, quiet.id, 1) == ["1"]  # it ran...
    assert AsyncResult(quiet.id).state == "PENDING"  # ...and nothing was written
    kept = AsyncResult(stored.id)
    assert (kept.state, kept.result) == ("SUCCESS", 2)
    assert (kept.name, kept.args) == ("quiet.read", [2])  # result_extended
    kept.forget()  # the status page has shown it: delete it now, not after result_expires
    assert AsyncResult(stored.id).state == "PENDING"
