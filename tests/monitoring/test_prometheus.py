"""Proof for docs/monitoring/prometheus.md: the exporter against a real worker and broker."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
import yaml
from celery import Celery

from snippets.monitoring.prometheus import charge
from tests.harness.process import ROOT
from tests.harness.redelivery import wait_succeeded
from tests.harness.services import require_tool
from tests.monitoring.helpers import poll

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


def test_the_rules_name_only_metrics_the_exporter_exposes(exporter):
    """every metric named in the rules and fed by their unit tests is one a scrape of the running
    exporter returns (plus Prometheus's `up`)."""
    exposed = {name for name, _labels in exporter.scrape()} | {"up"}  # up: Prometheus's own
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    named = {m for rule in rules for m in METRIC.findall(rule["expr"])}
    assert named >= {"celery_worker_up", "celery_queue_length", EVENTS, "up"}
    assert named <= exposed, f"not exposed: {named - exposed}"
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    series = {s["series"].split("{")[0] for t in tests for s in t["input_series"]}
    assert series <= exposed, (
        f"unit tests feed series the exporter never exposes: {series - exposed}"
    )
