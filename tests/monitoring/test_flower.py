"""Proof for docs/monitoring/flower.md: a real Flower process watching a real worker."""

from __future__ import annotations

import subprocess
import uuid

import psutil
import pytest
import requests
from celery import Celery

from snippets.monitoring.flower import flower_api, live_workers, tasks_seen_by_flower, thumbnail
from tests.harness.process import ROOT
from tests.harness.redelivery import redeliver
from tests.monitoring.helpers import AUTH, FLOWER_SH, poll, tool_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("broker")]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.proves_idempotent(task=thumbnail)
def test_flower_lists_the_live_worker_and_the_tasks_that_ran(shared_prefork_worker, running_flower):
    """`/api/workers` shows the worker online; `/api/tasks` shows three `SUCCESS` and one `FAILURE`
    on that worker; `/metrics` counts exactly 3 `task-succeeded` and 1 `task-failed` events, 3
    runtime observations, `flower_worker_online 1`; two more tasks raise the counter to 5.
    (`thumbnail` has no effect: delivered again, the same id gives the same result.)

    The session's worker, as the deployment starts it: this module's Flower starts with this
    test, so it counts only the events sent since, and no other module runs `thumbnail`."""
    fl = running_flower
    wp = shared_prefork_worker
    poll(lambda: wp.hostname in live_workers(fl.url, AUTH))  # its heartbeat, within seconds

    ok = [thumbnail.apply_async((i,), queue=wp.queue) for i in range(3)]
    bad = thumbnail.apply_async((-1,), queue=wp.queue)
    assert [r.get(timeout=30) for r in ok] == ["thumb-0", "thumb-1", "thumb-2"]
    with pytest.raises(ValueError, match="no image -1"):
        bad.get(timeout=30)

    def all_final() -> dict[str, dict]:
        seen = tasks_seen_by_flower(fl.url, AUTH, thumbnail.name)
        ids = {r.id for r in [*ok, bad]}
        done = {i: t for i, t in seen.items() if i in ids and t["state"] in {"SUCCESS", "FAILURE"}}
        return done if len(done) == 4 else {}

    seen = poll(all_final)
    assert {seen[r.id]["state"] for r in ok} == {"SUCCESS"}
    assert seen[bad.id]["state"] == "FAILURE"
    assert all(t["worker"] == wp.hostname for t in seen.values())

    # /metrics: per-worker, per-task counters and a runtime histogram, from the same events.
    text = requests.get(f"{fl.url}/metrics", timeout=10).text
    mine = {"task": thumbnail.name, "worker": wp.hostname}
    assert metric(text, "flower_events_total", type="task-succeeded", **mine) == 3
    assert metric(text, "flower_events_total", type="task-failed", **mine) == 1
    assert metric(text, "flower_task_runtime_seconds_count", **mine) == 3  # successes only
    assert metric(text, "flower_worker_online", worker=wp.hostname) == 1

    more = [thumbnail.apply_async((i,), queue=wp.queue) for i in range(2)]
    [r.get(timeout=30) for r in more]

    def risen() -> bool:
        text = requests.get(f"{fl.url}/metrics", timeout=10).text
        return metric(text, "flower_events_total", type="task-succeeded", **mine) == 5

    poll(risen)
    again = redeliver(wp, thumbnail, ok[0], (0,))  # a redelivery: the same id again
    assert (again["status"], again["result"]) == ("SUCCESS", "thumb-0")


def test_why_without_credentials_the_api_answers_401_but_metrics_is_open(running_flower):
    """401 without or with wrong credentials, 200 with them; `/metrics` and `/healthcheck` open."""
    fl = running_flower
    assert requests.get(f"{fl.url}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{fl.url}/", timeout=10).status_code == 401
    wrong = requests.get(f"{fl.url}/api/workers", auth=("ops", "wrong"), timeout=10)
    assert wrong.status_code == 401
    assert requests.get(f"{fl.url}/api/workers", auth=AUTH, timeout=10).status_code == 200
    # /metrics and /healthcheck carry no authentication at all in Flower 2.2:
    assert requests.get(f"{fl.url}/metrics", timeout=10).status_code == 200
    assert requests.get(f"{fl.url}/healthcheck", timeout=10).text == "OK"


def test_the_password_never_appears_in_argv(running_flower):
    """The page's command takes the password from FLOWER_BASIC_AUTH, so `ps` cannot show it."""
    fl = running_flower
    shell = psutil.Process(fl.proc.pid)
    cmdlines = [" ".join(p.cmdline()) for p in [shell, *shell.children(recursive=True)]]
    assert any(" flower " in c for c in cmdlines)
    assert not any(AUTH[1] in c for c in cmdlines)


def test_why_a_queued_task_is_visible_only_with_task_send_sent_event(celery_app, running_flower):
    """No worker consumes this queue: only the publisher's task-sent event can tell Flower."""
    fl = running_flower
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    quiet = Celery("quiet", broker=celery_app.conf.broker_url, set_as_current=False)
    quiet.conf.task_send_sent_event = False  # the default
    try:
        announced = thumbnail.apply_async((1,), queue=queue)  # project setting: True
        silent = quiet.send_task(thumbnail.name, (2,), queue=queue)
        after = thumbnail.apply_async((3,), queue=queue)  # published after the silent one

        def pending() -> dict:
            seen = tasks_seen_by_flower(fl.url, AUTH, thumbnail.name)
            states = {seen.get(r.id, {}).get("state") for r in (announced, after)}
            return states == {"PENDING"} and seen

        seen = poll(pending)
        assert silent.id not in seen  # queued just the same, but Flower cannot know
        info = flower_api(fl.url, f"/api/task/info/{silent.id}", AUTH)
        assert info.status_code == 404
        with celery_app.connection_for_write() as conn:
            assert conn.default_channel.queue_declare(queue, passive=True).message_count == 3
    finally:
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        quiet.close()


def test_why_flower_forgets_every_task_when_it_restarts(
    shared_prefork_worker, running_flower, flower
):
    """The last test to use the shared Flower: it stops it (a later user would fail, not pass).
    The session's worker runs the task: only Flower restarts, the worker goes on."""
    fl = running_flower
    wp = shared_prefork_worker
    result = thumbnail.apply_async((7,), queue=wp.queue)
    assert result.get(timeout=30) == "thumb-7"
    poll(lambda: result.id in tasks_seen_by_flower(fl.url, AUTH, thumbnail.name))

    fl.stop()
    restarted = flower()
    # The worker: yes, from its next heartbeat. (Poll for *this* worker: the fixture's own probe
    # event already lists a "gen<pid>" client, so "any live worker" is true too early.)
    poll(lambda: wp.hostname in live_workers(restarted.url, AUTH))
    assert result.id not in tasks_seen_by_flower(restarted.url, AUTH, thumbnail.name)  # task: gone
    assert result.get(timeout=5) == "thumb-7"  # the result backend still has it


def test_the_command_refuses_to_start_without_credentials():
    """No FLOWER_BASIC_AUTH, no Flower: the script stops before an open dashboard can exist."""
    env = {k: v for k, v in tool_env().items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(
        ["sh", str(FLOWER_SH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password" in done.stderr
    assert "flower" not in done.stdout.lower()
