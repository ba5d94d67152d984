"""Proof for docs/monitoring/stuck-tasks.md: the runbook run against real workers and a broker."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from celery.exceptions import NotRegistered
from celery.exceptions import TimeoutError as CeleryTimeoutError

from snippets.monitoring.prometheus import charge
from snippets.monitoring.stuck_tasks import (
    fetch_status,
    fetch_status_without_timeout,
    queue_length,
    where_is,
)
from tests.harness.process import ROOT
from tests.monitoring.helpers import poll, tool_env

pytestmark = pytest.mark.django_db(transaction=True)
RUNBOOK = ROOT / "snippets/monitoring/stuck-tasks.sh"


def runbook(section: str, **env: str) -> list[str]:
    """Run one section of the runbook as the page shows it; return its output lines."""
    text = RUNBOOK.read_text()
    body = re.search(rf"\[start:{section}\]\n(.*?)# --8<-- \[end:{section}\]", text, re.S)[1]
    done = subprocess.run(
        ["sh", "-c", body], cwd=ROOT, env=tool_env(**env), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def json_lines(lines: list[str]) -> list:
    """The replies of `celery inspect/control ... --json`, one JSON line per command."""
    return [json.loads(line) for line in lines if line.startswith(("{", "["))]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections (the kernel does) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/status"


@pytest.mark.xfail(
    strict=True,
    raises=CeleryTimeoutError,
    reason="issue 16: under the recommended deployment (REMAP_SIGTERM=SIGQUIT) pool children "
    "ignore SIGTERM, so `terminate SIGTERM` leaves the task running; fix the runbook, not the test",
)
def test_why_io_without_a_timeout_blocks_until_revoked(celery_app, worker_process, silent_server):
    wp = worker_process(concurrency=1)
    blocked = fetch_status_without_timeout.apply_async((silent_server,), queue=wp.queue)
    waiting = fetch_status.apply_async((silent_server,), queue=wp.queue)

    found = poll(lambda: (f := where_is(celery_app, blocked.id, [wp.queue])).get("active") and f)
    assert found["active"] == wp.hostname
    active, reserved, scheduled, registered, queues = json_lines(runbook("inspect"))
    assert reserved[wp.hostname] == scheduled[wp.hostname] == []
    assert fetch_status.name in registered[wp.hostname]
    assert [q["name"] for q in queues[wp.hostname]] == [wp.queue]
    [task] = [t for t in active[wp.hostname] if t["id"] == blocked.id]
    assert task["name"] == fetch_status_without_timeout.name
    assert task["worker_pid"] in wp.pool_pids()
    assert found["state"] == "STARTED"  # task_track_started; without it: PENDING

    # Prefetch 1 with acks_late: the next task is not held by the busy worker, it waits in the
    # broker (any free worker could take it).
    assert "reserved" not in where_is(celery_app, waiting.id, [wp.queue])
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, wp.queue) == 1

    terminate = runbook("terminate", TASK_ID=blocked.id, WORKER=wp.hostname)
    [replies] = json_lines(terminate)  # control commands answer with a list
    assert replies == [{wp.hostname: {"ok": f"terminate: {blocked.id}"}}]
    poll(lambda: blocked.state == "REVOKED")

    # The worker keeps serving: a new process runs the next task, which has a timeout.
    with pytest.raises(requests.exceptions.ReadTimeout):
        waiting.get(timeout=60)
    assert task["worker_pid"] not in wp.pool_pids()
    assert blocked.state == "REVOKED"

    wp.stop()  # a clean stop returns every unacknowledged message to the queue...
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, wp.queue) == 0  # ...and there is none: terminate acked it


@pytest.mark.deviation("--prefetch-multiplier=4", reason="the anti-pattern under test")
@pytest.mark.xfail(
    strict=True,
    raises=CeleryTimeoutError,
    reason="issue 16: under the recommended deployment (REMAP_SIGTERM=SIGQUIT) pool children "
    "ignore SIGTERM, so `terminate SIGTERM` leaves the task running; fix the runbook, not the test",
)
def test_why_a_large_prefetch_holds_tasks_behind_a_blocked_one(
    celery_app, worker_process, silent_server
):
    wp = worker_process(concurrency=1, args=["--prefetch-multiplier=4"])
    blocked = fetch_status_without_timeout.apply_async((silent_server,), queue=wp.queue)
    behind = [charge.apply_async((n,), queue=wp.queue) for n in (1, 2)]

    def reserved() -> bool:
        return all(where_is(celery_app, r.id, []).get("reserved") == wp.hostname for r in behind)

    poll(reserved, timeout=60)  # received by the worker, PENDING, and going nowhere
    assert {r.state for r in behind} == {"PENDING"}
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, wp.queue) == 0  # no other worker can take them

    celery_app.control.revoke(blocked.id, terminate=True)  # the Python form
    assert [r.get(timeout=60) for r in behind] == [1, 2]
    assert blocked.state == "REVOKED"


@pytest.mark.services("broker")  # the runbook's `celery purge` runs in another process
def test_a_task_routed_to_an_unconsumed_queue_stays_pending_and_the_check_finds_it(
    celery_app, celery_worker
):
    queue = "nobody-consumes-this"
    lost = charge.apply_async((5,), queue=queue)
    found = where_is(celery_app, lost.id, [queue, celery_app.conf.task_default_queue])
    assert found == {"state": "PENDING", "unconsumed_queues": {queue: 1}}

    output = runbook("purge", QUEUE=queue)
    assert any("Purged 1 message" in line for line in output), output
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, queue) == 0
        assert queue_length(conn, "never-declared-anywhere") == 0  # NOT_FOUND is 0, not an error
    assert lost.state == "PENDING"  # and it will stay so: the message is gone


def test_an_unknown_task_name_fails_with_not_registered(celery_app, celery_worker):
    """Celery 5.7: the worker rejects it and stores NotRegistered; it is not PENDING forever."""
    result = celery_app.send_task("snippets.monitoring.no_such_task", (1,))
    with pytest.raises(NotRegistered):
        result.get(timeout=30)
    inspect = celery_app.control.inspect(destination=[celery_worker.hostname], timeout=10)
    names = inspect.registered()[celery_worker.hostname]  # the runbook's `inspect registered`
    assert fetch_status.name in names
    assert "snippets.monitoring.no_such_task" not in names


NO_BACKEND = """
from celery import Celery
app = Celery("bare", broker="memory://")
result = app.AsyncResult("9d6b7c1e-0000-4000-8000-000000000000")
for ask in (lambda: result.state, lambda: result.get(timeout=1)):
    try:
        print(repr(ask()))
    except Exception as exc:
        print(type(exc).__name__, exc)
"""


def test_without_a_result_backend_there_is_no_state_to_ask():
    """Run where CELERY_RESULT_BACKEND is unset: that variable overrides any app's backend."""
    env = {k: v for k, v in tool_env().items() if k != "CELERY_RESULT_BACKEND"}
    done = subprocess.run(
        [sys.executable, "-c", NO_BACKEND], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    state, get, _see_docs = done.stdout.splitlines()
    assert state == "AttributeError 'DisabledBackend' object has no attribute '_get_task_meta_for'"
    assert get.startswith("NotImplementedError No result backend is configured")
