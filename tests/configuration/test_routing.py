"""Proof for docs/configuration/routing.md: task_routes + dedicated workers isolate slow work;
a queue no worker consumes strands its tasks, and stranded_queues() notices."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.utils.deprecated import CDeprecationWarning

from snippets.configuration import routing
from snippets.configuration.routing import send_receipt, stranded_queues, transcode_video
from tests.harness.redelivery import deliver_again
from tests.harness.wait import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def routed_app(celery_app) -> Iterator[Celery]:
    """A publisher configured like the project plus the page's CELERY_TASK_ROUTES."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_routes = routing.CELERY_TASK_ROUTES
    with app.connection_for_write() as conn:
        app.amqp.queues["media"].bind(conn.default_channel).declare()
        conn.default_channel.queue_purge("media")  # nothing left over from an earlier run
    yield app
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete("media")
    app.close()


def transcodes(app: Celery, count: int = 3) -> list:
    return [app.send_task(transcode_video.name, (n,)) for n in range(count)]


@pytest.mark.services("broker")
def test_a_flood_on_its_own_queue_does_not_delay_the_default_queue(
    routed_app, worker_process, celery_worker
):
    """the receipt is done while the flood is not."""
    media = worker_process(concurrency=1, queue="media")  # celery -A ... worker -Q media
    flood = transcodes(routed_app)
    receipt = send_receipt.delay(7)  # default queue, served by the other worker
    assert receipt.get(timeout=30) == 7
    assert not all(r.ready() for r in flood)  # the receipt did not wait for the flood
    assert [r.get(timeout=60) for r in flood] == [0, 1, 2]
    assert media.log().count("transcode_video") >= 3


@pytest.mark.services("broker")
@pytest.mark.antipattern("snippets/configuration/routing.py:routes")
def test_why_on_one_queue_the_quick_task_waits_for_the_flood(worker_process):
    """The pattern's capacity (two processes: the media worker and the default one), on one
    queue: the receipt gets a process only once a third transcode has finished."""
    shared = worker_process(concurrency=2)
    flood = [transcode_video.apply_async((n,), queue=shared.queue) for n in range(4)]
    receipt = send_receipt.apply_async((7,), queue=shared.queue)
    assert receipt.get(timeout=60) == 7
    assert sum(r.ready() for r in flood) >= 3  # in the pattern it does not wait for them


@pytest.mark.services("broker")
@pytest.mark.antipattern("snippets/configuration/routing.py:stranded")
def test_why_a_task_routed_to_an_unconsumed_queue_stays_pending(
    routed_app, worker_process, celery_worker
):
    """`PENDING`, `{"media": 1}`, then a `media` worker drains it and the report is empty."""
    result = routed_app.send_task(transcode_video.name, (1,))
    time.sleep(3)  # give any worker ample time to pick it up: none consumes "media"
    assert result.state == "PENDING"  # no error anywhere: the task just waits
    assert stranded_queues(routed_app) == {"media": 1}  # how you notice
    worker_process(queue="media")
    assert result.get(timeout=60) == 1  # a worker on the queue drains it
    assert wait_until(lambda: stranded_queues(routed_app) == {}, what="no stranded queue")


NEVER = "configuration-never-declared"


def route_by_function(name: str, *_args: object, **_kwargs: object) -> dict | None:
    return {"queue": NEVER} if name == transcode_video.name else None


@pytest.mark.services("broker")
@pytest.mark.parametrize(
    "routes",
    [
        {transcode_video.name: {"queue": NEVER}},
        ([("snippets.configuration.routing.transcode_*", {"queue": NEVER})],),  # glob patterns
        (route_by_function,),  # a router function
        {transcode_video.name: {"exchange": "media", "routing_key": "media"}},  # no queue named
        None,  # Celery's default: no routes at all
    ],
    ids=["dict", "glob-list", "function", "exchange-only", "none"],
)
def test_stranded_queues_reads_every_form_of_routes(celery_app, celery_worker, routes):
    """Whatever the form of task_routes, the routed queues are what Celery's router picks; a
    routed queue never declared is reported with no backlog, the consumed default queue not."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_routes = routes
    names_a_queue = routes is not None and "exchange" not in str(routes)
    assert stranded_queues(app) == ({NEVER: 0} if names_a_queue else {})
    # and the check declared nothing: RabbitMQ still has no such queue (Redis has no declared
    # queues at all, only lists that exist while they hold messages)
    with (
        app.connection_for_read() as conn,
        pytest.raises(conn.channel_errors),
        conn.channel() as channel,
    ):
        channel.queue_declare(NEVER, passive=True)


def test_routes_are_applied_when_publishing(routed_app, celery_app, celery_worker):
    """the router sends `transcode_video` to `media`."""
    route = routed_app.amqp.router.route({}, transcode_video.name)
    assert route["queue"].name == "media"
    assert routed_app.amqp.router.route({}, send_receipt.name)["queue"].name == "celery"
    # without the route (the project app has none) it goes to the default queue
    assert celery_app.amqp.router.route({}, transcode_video.name)["queue"].name == "celery"
    assert transcode_video.delay(5).get(timeout=30) == 5  # run by the default worker


def test_a_queue_set_on_the_task_itself_is_deprecated():
    """Celery 5.7.0 warns: the queue/priority/routing_key task attributes lose effect in 6.0."""
    app = Celery(set_as_current=False)

    @app.task(queue="media", shared=False)
    def legacy() -> None: ...

    with pytest.warns(CDeprecationWarning, match="'queue' task attribute"):
        app.finalize(auto=True)


@pytest.mark.parametrize(
    ("task", "args", "expected"),
    [
        pytest.param(send_receipt, (7,), 7, marks=pytest.mark.proves_idempotent(task=send_receipt)),
        pytest.param(
            transcode_video,
            (5,),
            5,
            marks=pytest.mark.proves_idempotent(task=transcode_video),
        ),
    ],
    ids=["send_receipt", "transcode_video"],
)
def test_a_task_delivered_again_returns_the_same(shared_prefork_worker, task, args, expected):
    """Both stand-ins are pure (they only return their argument): the same message delivered
    again (same task id, as the broker hands back an unacked one) ends with the same result.

    Fails if a result depended on how often the task ran. (A real receipt sends an e-mail: that
    one needs the key of docs/task-design/idempotency.md.)"""
    wp = shared_prefork_worker
    first = task.apply_async(args, queue=wp.queue)
    assert first.get(timeout=30) == expected
    assert deliver_again(wp, task, args, first.id) == expected
