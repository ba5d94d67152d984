"""Proof for docs/monitoring/prometheus.md: the exporter against a real worker and broker."""

from __future__ import annotations

import re
import signal
import subprocess
import uuid

import pytest
import yaml
from celery import Celery
from kombu import Connection

from snippets.monitoring.prometheus import charge, queue_length
from tests.harness.process import ROOT, fresh_python
from tests.harness.redelivery import wait_succeeded
from tests.harness.services import require_tool
from tests.monitoring.helpers import poll, tool_env

pytestmark = pytest.mark.django_db(transaction=True)  # the exporter and workers need a broker
RULES = ROOT / "snippets/monitoring/celery-alerts.yml"
RULE_TESTS = ROOT / "snippets/monitoring/celery-alerts.test.yml"
EVENTS = "celery_task_events_total"


def counts(exporter, name: str) -> dict[str, float]:
    return {
        event: exporter.value(EVENTS, name=name, event=event)
        for event in ("sent", "received", "started", "succeeded", "failed")
    }


def test_exporter_counters_match_what_ran(exporter, exporter_queues, worker_process):
    """4 successes and 2 failures: exactly `sent 6, received 6, started 6, succeeded 4, failed 2`
    and 4 runtime observations; `celery_worker_up` is 1 while the worker runs, and 0 once its
    heartbeats stop (the test SIGKILLs it, so no `worker-offline` event says goodbye)."""
    wp = worker_process(queue=exporter_queues[0])
    poll(lambda: exporter.value("celery_worker_up", hostname=wp.hostname) == 1)
    before = counts(exporter, charge.name)
    runtimes_before = exporter.value("celery_task_runtime_seconds_count", name=charge.name)

    ok = [charge.apply_async((n,), queue=wp.queue) for n in (10, 20, 30, 40)]
    bad = [charge.apply_async((-n,), queue=wp.queue) for n in (1, 2)]
    assert [r.get(timeout=30) for r in ok] == [10, 20, 30, 40]
    for r in bad:
        with pytest.raises(ValueError, match="cannot charge"):
            r.get(timeout=30)

    expected = {"sent": 6, "received": 6, "started": 6, "succeeded": 4, "failed": 2}

    def delta() -> dict[str, float]:
        now = counts(exporter, charge.name)
        return {k: now[k] - before[k] for k in now}

    poll(lambda: delta() == expected, timeout=30)
    runtimes = exporter.value("celery_task_runtime_seconds_count", name=charge.name)
    assert runtimes - runtimes_before == 4  # one observation per success
    # The page's buckets, the bounds histogram_quantile interpolates between (CeleryTaskSlow's
    # 120 s threshold sits on one; its rule tests feed the 120.0, 240.0 and +Inf series).
    bounds = {
        dict(labels)["le"]
        for metric, labels in exporter.scrape()
        if metric == "celery_task_runtime_seconds_bucket" and dict(labels)["name"] == charge.name
    }
    assert sorted(bounds, key=float) == [
        "0.1", "0.5", "1.0", "5.0", "15.0", "30.0", "60.0", "120.0", "240.0", "+Inf"
    ]  # fmt: skip

    wp.stop(signal.SIGKILL)  # no worker-offline event: only the heartbeats stop
    poll(lambda: exporter.value("celery_worker_up", hostname=wp.hostname) == 0, timeout=60)


@pytest.mark.proves_idempotent(task=charge)
def test_queue_length_rises_with_no_worker_and_falls_when_one_starts(
    exporter, exporter_queues, worker_process
):
    """5 with no consumer, 0 once a worker starts and runs them. (`charge` has no effect here:
    delivered again while no worker runs, the same id waits in the queue, counted as 1; a new
    worker gives the same result and leaves the queue empty.)

    Each 0 is a sample the exporter served (`exporter.value` reads an absent one as 0): fails
    if the exporter drops the gauge of an empty queue, serves a stale length, or misses the
    redelivered message."""
    queue = exporter_queues[1]

    def length() -> float | None:
        """The queue's `celery_queue_length` sample, None if the exporter served none."""
        return exporter.scrape().get(("celery_queue_length", (("queue", queue),)))

    results = [charge.apply_async((n,), queue=queue) for n in range(5)]
    poll(lambda: length() == 5)

    wp = worker_process(queue=queue)
    assert [r.get(timeout=60) for r in results] == [0, 1, 2, 3, 4]
    poll(lambda: length() == 0)

    wp.stop()  # no consumer again: the redelivered message waits where the exporter looks
    charge.apply_async((4,), task_id=results[4].id, queue=queue)  # the same id again
    poll(lambda: length() == 1)
    wp = worker_process(queue=queue)
    assert wait_succeeded(wp, results[4].id, 1) == ["4"]  # the same result
    poll(lambda: length() == 0)


def test_a_success_without_a_runtime_is_counted_and_not_observed(celery_app, exporter):
    """Celery 5.7 sends `task-succeeded` with `runtime=None` when a worker is lost after the task
    stored its success (celery/worker/request.py, `on_failure`). Sent here through Celery's own
    event dispatcher: the event is counted, the histogram skips it, and the exporter goes on
    consuming (observing None would raise and end its event loop)."""
    name, task_id = f"lost-after-success-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    with celery_app.connection_for_write() as conn:
        dispatcher = celery_app.events.Dispatcher(conn)
        dispatcher.send("task-received", uuid=task_id, name=name)
        dispatcher.send("task-succeeded", uuid=task_id, result="None", runtime=None)
        dispatcher.send("task-sent", uuid=str(uuid.uuid4()), name=name)  # a later event
    poll(lambda: exporter.value(EVENTS, name=name, event="sent") == 1)
    assert exporter.value(EVENTS, name=name, event="succeeded") == 1
    assert exporter.value("celery_task_runtime_seconds_count", name=name) == 0


@pytest.mark.services("broker")
def test_a_queue_that_does_not_exist_has_length_0(celery_app):
    """A passive declare of a queue nobody declared: NOT_FOUND, read as 0 waiting messages."""
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, f"never-declared-{uuid.uuid4().hex[:8]}") == 0


@pytest.mark.services("rabbitmq")
def test_queue_length_on_rabbitmq_declares_nothing(amqp_url):
    """The declare is passive: it neither creates a missing queue (each scrape would leave one
    behind) nor clashes with a queue declared with arguments, such as a dead-lettered work
    queue (an active declare without them fails with PRECONDITION_FAILED, read as 0 while
    messages wait)."""
    work, missing = (f"prom-{what}-{uuid.uuid4().hex[:8]}" for what in ("dlx", "missing"))
    arguments = {"x-dead-letter-exchange": "dead-letters", "x-dead-letter-routing-key": "x.dead"}
    with Connection(amqp_url) as conn:
        conn.default_channel.queue_declare(work, auto_delete=False, arguments=arguments)
        try:
            producer = conn.Producer()
            for n in range(2):
                producer.publish({"n": n}, exchange="", routing_key=work)
            assert queue_length(conn, work) == 2
            assert queue_length(conn, missing) == 0
            with pytest.raises(conn.channel_errors), conn.channel() as channel:
                channel.queue_declare(missing, passive=True)  # still NOT_FOUND: not created
        finally:
            for queue in (work, missing):
                with conn.channel() as channel:
                    channel.queue_delete(queue)


MAIN_DEFAULTS = """
import snippets.monitoring.prometheus as exporter


def serve(port, addr, registry):
    print(addr, port, flush=True)
    raise SystemExit(0)


exporter.start_http_server = serve  # what main() would serve on, without taking the port
exporter.main([])
"""


def test_without_arguments_the_exporter_serves_on_9808_on_localhost():
    """`--port` defaults to 9808 (the port Prometheus' exporter registry gives Celery
    exporters) and `--address` to 127.0.0.1. The server is replaced by one that only reports
    what it was given: a fixed port would clash between test runs side by side."""
    done = fresh_python(MAIN_DEFAULTS, tool_env(), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["127.0.0.1", "9808"]


def test_the_exporter_says_where_it_serves_at_once(exporter):
    """The start-up line is in the log while the exporter runs (flushed: a container or journal
    log shows it at start, not at exit)."""
    assert f"celery exporter on {exporter.url}/metrics" in exporter.log()


def test_why_event_counters_cannot_see_a_backlog(celery_app, exporter, exporter_queues):
    """Nothing consumes this queue: no task runs, so no event counter moves; the queue grows."""
    queue = exporter_queues[2]
    quiet = Celery("quiet", broker=celery_app.conf.broker_url, set_as_current=False)
    quiet.conf.task_send_sent_event = False  # Celery's default
    before = counts(exporter, charge.name)
    try:
        for n in range(3):
            quiet.send_task(charge.name, (n,), queue=queue)
        charge.apply_async((99,), queue=queue)  # the project's publisher announces its task
        poll(lambda: exporter.value("celery_queue_length", queue=queue) == 4)
        poll(lambda: counts(exporter, charge.name)["sent"] == before["sent"] + 1)
    finally:
        quiet.close()
    after = counts(exporter, charge.name)
    assert {k: after[k] - before[k] for k in after} == {
        "sent": 1,  # only the announced task; the other three are invisible to events
        "received": 0,
        "started": 0,
        "succeeded": 0,
        "failed": 0,  # a failure-rate alert stays silent while the backlog grows
    }


def promtool(*args: str) -> subprocess.CompletedProcess:
    require_tool("promtool (.ci/apt-packages: prometheus)", ["promtool", "--version"])
    return subprocess.run(
        ["promtool", *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )


def test_the_rules_pass_promtool_check_and_their_unit_tests():
    """`promtool check rules` and `promtool test rules`."""
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_why_promtool_rejects_a_broken_rule(tmp_path):
    """the check is not a rubber stamp."""
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("absent(celery_worker_up == 1)", "absent(("))
    checked = promtool("check", "rules", str(broken))
    assert checked.returncode != 0
    assert "FAILED" in checked.stdout + checked.stderr


METRIC = re.compile(r"\b(celery_[a-z_]+|up)\b(?=\s*[{\[=<>)]|\s*$)")


def test_the_rules_name_only_metrics_the_exporter_exposes(exporter, shared_prefork_worker):
    """every metric named in the rules and fed by their unit tests, and every bucket bound the
    unit tests feed, is one a scrape of the running exporter returns (plus Prometheus's `up`).
    A worker (the session's, as the deployment starts it) runs a task first: the scrape shows
    a worker and a runtime whether or not other tests ran before."""
    wp = shared_prefork_worker
    assert charge.apply_async((1,), queue=wp.queue).get(timeout=30) == 1
    poll(lambda: exporter.value("celery_worker_up", hostname=wp.hostname) == 1)
    poll(lambda: exporter.value("celery_task_runtime_seconds_count", name=charge.name) > 0)
    scraped = exporter.scrape()
    exposed = {name for name, _labels in scraped} | {"up"}  # up: Prometheus's own
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    named = {m for rule in rules for m in METRIC.findall(rule["expr"])}
    assert named >= {"celery_worker_up", "celery_queue_length", EVENTS, "up"}
    assert named <= exposed, f"not exposed: {named - exposed}"
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fed = [s["series"] for t in tests for s in t["input_series"]]
    series = {s.split("{")[0] for s in fed}
    assert series <= exposed, (
        f"unit tests feed series the exporter never exposes: {series - exposed}"
    )
    bounds = {m[1] for s in fed if (m := re.search(r'le="([^"]+)"', s))}
    exposed_bounds = {
        dict(labels)["le"]
        for name, labels in scraped
        if name == "celery_task_runtime_seconds_bucket"
    }
    assert bounds, "the rule tests feed no bucket series"
    assert bounds <= exposed_bounds, f"not a bucket: {bounds - exposed_bounds}"
