"""Proof for docs/task-design/calling.md: options, expiry, ETA in memory, Redis redelivery."""

import time
import uuid
from datetime import datetime

import pytest
import redis
from celery import Celery, Task, shared_task
from kombu import Exchange, Queue

from snippets.task_design.calling import (
    redis_transport_options,
    remind_and_forget,
    remind_later,
    remind_now,
    remind_soon,
    reminder_for,
    reminder_options,
    send_reminder,
)
from snippets.task_design.models import Reminder
from tests.harness.celery import queue_length
from tests.harness.redelivery import deliver_again, outcomes
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def reminders(user_id: int) -> int:
    return Reminder.objects.filter(user_id=user_id).count()


def delete_queue(app, queue: str, url: str | None = None) -> None:
    with app.connection_for_write(url) as conn:
        conn.default_channel.queue_delete(queue)


def declare_queue(app, queue: str) -> None:
    """Declare a queue as a worker would (RabbitMQ drops a message for an unbound queue)."""
    with app.connection_for_write() as conn:
        Queue(queue, Exchange(queue), routing_key=queue)(conn.default_channel).declare()


def test_delay_and_a_partial_run_on_the_worker(celery_worker):
    """`delay()` and a partial signature run on the in-thread worker; the partial's argument is
    prepended."""
    assert Reminder.objects.get(pk=remind_now(1).get(timeout=20)).text == "Welcome aboard"

    reminder_id = reminder_for("Your invoice is ready").delay(7).get(timeout=20)
    assert Reminder.objects.filter(pk=reminder_id, user_id=7).exists()  # 7 came at call time

    sig = reminder_options()
    assert sig.options == {"countdown": 1, "priority": 5}
    assert Reminder.objects.get(pk=sig.apply_async().get(timeout=20)).user_id == 42


@pytest.mark.proves_idempotent(task=send_reminder)
def test_a_reminder_delivered_again_is_recorded_once(shared_prefork_worker):
    """The same message delivered again to a prefork worker (same task id: a redelivery)
    returns the same reminder and records none; a second call (a new message) is a second
    reminder. Keyed on anything but the message's id, or created on every run, the redelivery
    would record a second row."""
    wp = shared_prefork_worker
    first = send_reminder.apply_async((61, "once"), queue=wp.queue)
    reminder = first.get(timeout=30)
    assert deliver_again(wp, send_reminder, (61, "once"), first.id) == reminder
    assert reminders(61) == 1
    assert send_reminder.apply_async((61, "once"), queue=wp.queue).get(timeout=30) != reminder
    assert reminders(61) == 2


RABBITMQ_CONSUMER_TIMEOUT_S = 30 * 60  # RabbitMQ's default consumer_timeout (1800000 ms)


def test_apply_async_options_travel_in_the_message(celery_app, published):
    """`eta`, `expires`, `priority` and the custom header of `apply_async` are in the published
    message."""
    before = datetime.now().astimezone()
    result = remind_later(3, request_id="req-123", queue="td-reminders")
    try:
        [sent] = [p for p in published if p["id"] == result.id]
        headers = sent["headers"]
        assert headers["expires"] > headers["eta"] > ""  # ISO 8601 timestamps, in UTC
        assert headers["x_request_id"] == "req-123"  # a custom header, beside Celery's own
        assert result.state == "PENDING"  # nobody consumes td-reminders: the message waits
        # the wait the worker holds the message unacked stays below both brokers' timeouts
        held = (datetime.fromisoformat(headers["eta"]) - before).total_seconds()
        assert 15 * 60 <= held < 15 * 60 + 60  # eta: 15 minutes from the call
        visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
        assert held < min(visibility, RABBITMQ_CONSUMER_TIMEOUT_S)
        assert sent["properties"]["priority"] == 3  # a message property, not a header

        soon = remind_soon(11, queue="td-reminders")
        [sent] = [p for p in published if p["id"] == soon.id]
        assert sent["headers"]["eta"] < sent["headers"]["expires"]  # countdown=10, expires=60
    finally:
        delete_queue(celery_app, "td-reminders")


def test_a_task_past_expires_never_runs(celery_app, shared_prefork_worker):
    """Published with expires=1 to a queue no worker consumes yet; consumed 2 s later.

    Redis: the worker receives it, discards it and stores REVOKED. RabbitMQ: Celery also sets
    the message's `expiration` (a per-message TTL), so the broker drops it before any worker
    sees it, and the state stays PENDING.
    """
    wp = shared_prefork_worker
    amqp = celery_app.conf.broker_url.startswith(("amqp", "pyamqp"))
    queue = f"td-expires-{uuid.uuid4().hex[:8]}"
    declare_queue(celery_app, queue)
    result = send_reminder.apply_async((21, "too late"), expires=1, queue=queue)
    time.sleep(2)  # a backlog: the message waits past its expiry
    if amqp:
        assert queue_length(celery_app, queue) == 0  # RabbitMQ expired it in the queue

    celery_app.control.add_consumer(queue, destination=[wp.hostname], reply=True)
    try:
        sentinel = send_reminder.apply_async((22, "on time"), queue=queue)
        assert sentinel.get(timeout=60)  # the queue was consumed past the expired message
    finally:
        celery_app.control.cancel_consumer(queue, destination=[wp.hostname], reply=True)
        delete_queue(celery_app, queue)
    assert reminders(21) == 0  # which never ran
    if amqp:
        assert result.state == "PENDING"
    else:
        wait_until(lambda: result.state == "REVOKED", what="REVOKED", context=wp)
        assert f"Discarding revoked task: {send_reminder.name}[{result.id}]" in wp.log()


def scheduled(celery_app, wp) -> list:
    replies = celery_app.control.inspect([wp.hostname], timeout=2).scheduled() or {}
    return replies.get(wp.hostname, [])


def test_why_eta_tasks_pile_up_in_worker_memory(celery_app, shared_prefork_worker):
    """Default: every ETA task is fetched and held in the worker's memory until it is due."""
    wp = shared_prefork_worker
    before = len(scheduled(celery_app, wp))
    results = [
        send_reminder.apply_async((user_id, "later"), countdown=600, queue=wp.queue)
        for user_id in range(31, 37)
    ]
    try:
        wait_until(lambda: len(scheduled(celery_app, wp)) == before + 6, what="6 ETA tasks held")
        assert queue_length(celery_app, wp.queue) == 0  # the broker holds none of them
    finally:
        for result in results:
            result.revoke()  # discarded when due; the session ends long before


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=tests.task_design.eta_limit_settings",
    reason="the recommended settings plus worker_eta_task_limit=2, the setting under test",
)
def test_worker_eta_task_limit_leaves_the_rest_in_the_broker(celery_app, worker_process):
    """Celery 5.6+: worker_eta_task_limit=2 caps what the worker holds; the rest wait."""
    wp = worker_process(env={"DJANGO_SETTINGS_MODULE": "tests.task_design.eta_limit_settings"})
    for user_id in range(41, 47):
        send_reminder.apply_async((user_id, "later"), countdown=600, queue=wp.queue)

    wait_until(lambda: len(scheduled(celery_app, wp)) == 2, what="2 ETA tasks held")
    wait_until(lambda: queue_length(celery_app, wp.queue) == 4, what="4 left in the broker")
    time.sleep(1)
    assert len(scheduled(celery_app, wp)) == 2  # and it stays at the limit


@pytest.mark.services("redis", "broker")
@pytest.mark.deviation(
    "-A tests.task_design.redis_visibility_app",
    reason="an app whose Redis visibility_timeout the test sets (too short, then sized)",
)
@pytest.mark.deviation("VISIBILITY_TIMEOUT", reason="the value under test, read by that app")
@pytest.mark.deviation("KEYPREFIX", reason="the sized worker's own unacked index on Redis")
def test_why_a_countdown_longer_than_the_visibility_timeout_runs_twice(worker_process, redis_url):
    """Redis: a held ETA message is handed out again after visibility_timeout; the fix holds."""
    from tests.task_design.redis_visibility_app import make_app

    prefix = f"td-sized-{uuid.uuid4().hex[:8]}:"  # its own unacked index, see make_app
    broker = redis.Redis.from_url(redis_url)  # to read that index (kombu prefixes its keys)
    app, sized_app = make_app(redis_url, 3600), make_app(redis_url, 3600, prefix)
    # CELERY_BROKER_URL in the environment beats any app's broker_url: point it at Redis.
    redis_env = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
    short = 2  # seconds: shorter than the 6 s countdown
    fixed = redis_transport_options(longest_eta_s=6, time_limit_s=5)["visibility_timeout"]
    assert fixed > 6 + 5  # room beyond countdown + time limit: the wait for a free child too
    too_short = worker_process(
        app="tests.task_design.redis_visibility_app",
        env={"VISIBILITY_TIMEOUT": str(short), **redis_env},
        ready=False,
    )
    sized = worker_process(
        app="tests.task_design.redis_visibility_app",
        env={"VISIBILITY_TIMEOUT": str(fixed), "KEYPREFIX": prefix, **redis_env},
        ready=False,
    )
    try:
        for wp in (too_short, sized):
            wp.wait_for_log("ready.", timeout=60)
        sent = []
        for wp_app, wp, user_id in ((app, too_short, 51), (sized_app, sized, 52)):
            with wp_app.connection_for_write(redis_url) as conn:
                sent.append(
                    wp_app.send_task(
                        send_reminder.name,
                        (user_id, "once?"),
                        countdown=6,
                        queue=wp.queue,
                        connection=conn,
                    ).id
                )

        def runs(wp, task_id: str) -> int:
            return len(outcomes(wp, task_id))

        # The sized worker's copy, held for its countdown, sits in its unacked index; the index
        # and the queue both empty after its ack mean no copy is left to hand out again.
        unacked, ready = f"{prefix}unacked", f"{prefix}{sized.queue}"
        wait_until(
            lambda: broker.hlen(unacked) == 1, what="the sized worker holds it", context=sized
        )
        wait_until(lambda: runs(too_short, sent[0]) >= 2, what="a second run", context=too_short)
        wait_until(lambda: runs(sized, sent[1]) >= 1, what="the sized worker to run it")
        wait_until(
            lambda: broker.hlen(unacked) == broker.llen(ready) == 0,
            what="the sized worker's copy acked, none waiting",
            context=sized,
        )
        assert runs(sized, sent[1]) == 1  # visibility_timeout above the countdown: once
        assert (reminders(51), reminders(52)) == (1, 1)  # the task's key held the extra runs
    finally:
        for wp, wp_app in ((too_short, app), (sized, sized_app)):
            wp.stop()
            delete_queue(wp_app, wp.queue, redis_url)
        broker.close()


@shared_task(bind=True, name="tests.task_design.request_headers")
def request_headers(self: Task) -> dict[str, str | None]:
    """What the worker hands the task: the two candidate homes of a request id."""
    return {
        "x_request_id": getattr(self.request, "x_request_id", None),
        "correlation_id": self.request.correlation_id,
    }


def test_why_a_correlation_id_header_is_replaced_by_the_task_id(celery_worker):
    """The worker sets request.correlation_id from the message property (the task id), over a
    header of that name; a header of any other name reaches the task as sent."""
    result = request_headers.apply_async(
        headers={"correlation_id": "req-123", "x_request_id": "req-123"}
    )
    seen = result.get(timeout=20)
    assert seen["x_request_id"] == "req-123"
    assert seen["correlation_id"] == result.id != "req-123"


def test_ignore_result_on_one_call_stores_no_result(celery_worker):
    """The call's `ignore_result=True` overrides the task's: it runs and stores nothing; the
    same task called without it stores SUCCESS."""
    quiet = remind_and_forget(8)
    wait_until(lambda: reminders(8) == 1, timeout=20)
    stored = remind_now(9)
    assert stored.get(timeout=20)
    assert stored.state == "SUCCESS"  # the task itself stores results
    assert quiet.state == "PENDING"  # it ran before `stored`: a stored result would be there


def test_a_queue_given_at_the_call_wins_over_task_routes(celery_app):
    """Celery's router merges the call's options over the route: `queue=` wins, and a call
    without it follows CELERY_TASK_ROUTES."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_routes = {send_reminder.name: {"queue": "td-routed"}}
    try:
        router = app.amqp.router
        assert router.route({}, send_reminder.name)["queue"].name == "td-routed"
        chosen = router.route({"queue": "td-reminders"}, send_reminder.name)
        assert chosen["queue"].name == "td-reminders"
    finally:
        app.close()
