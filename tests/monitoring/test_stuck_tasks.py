"""Proof for docs/monitoring/stuck-tasks.md: the runbook run against real workers and a broker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from celery import Celery
from celery.exceptions import NotRegistered
from django.conf import settings

from snippets.monitoring.prometheus import charge
from snippets.monitoring.stuck_tasks import (
    fetch_status,
    fetch_status_without_timeout,
    queue_length,
    where_is,
)
from tests.configuration.helpers import PrivateRedis
from tests.harness.brokers import PrivateVhost
from tests.harness.net import http_server, silent_listener
from tests.harness.process import ROOT, fresh_python
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until
from tests.monitoring.helpers import poll, tool_env

pytestmark = pytest.mark.django_db(transaction=True)
RUNBOOK = ROOT / "snippets/monitoring/stuck-tasks.sh"
CELERY_ENV = ROOT / "snippets/production/systemd/celery.env"


def deployed_signal_env() -> dict[str, str]:
    """REMAP_SIGTERM as the site's worker unit (and Dockerfile, k8s manifest) sets it.

    Read from the systemd EnvironmentFile, not typed here: the terminate proofs must run under
    the signal handling a reader deploys, where pool processes ignore SIGTERM.
    """
    pairs = dict(
        line.split("=", 1)
        for line in CELERY_ENV.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {"REMAP_SIGTERM": pairs["REMAP_SIGTERM"]}


def runbook(section: str, **env: str) -> list[str]:
    """Run one section of the runbook as the page shows it; return its output lines."""
    text = RUNBOOK.read_text()
    body = re.search(rf"\[start:{section}\]\n(.*?)# --8<-- \[end:{section}\]", text, re.S)[1]
    done = subprocess.run(
        ["sh", "-c", body],
        cwd=ROOT,
        env=tool_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def json_lines(lines: list[str]) -> list:
    """The replies of `celery inspect/control ... --json`, one JSON line per command."""
    return [json.loads(line) for line in lines if line.startswith(("{", "["))]


@pytest.fixture
def silent_socket() -> Iterator[socket.socket]:
    """A listening TCP socket: the kernel accepts connections, nobody answers them."""
    with silent_listener() as server:
        yield server


@pytest.fixture
def silent_server(silent_socket) -> str:
    """The URL of a server that accepts connections and never answers."""
    return f"http://127.0.0.1:{silent_socket.getsockname()[1]}/status"


def accept_request(server: socket.socket) -> socket.socket:
    """The next connection the silent server holds, once its HTTP request has arrived."""
    server.settimeout(60)
    conn, _addr = server.accept()
    conn.settimeout(60)
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    return conn


def closed_by_peer(conn: socket.socket) -> bool:
    """True once the client side of `conn` is closed (its process let go of the call)."""
    conn.settimeout(60)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def answering_server() -> Iterator[tuple[str, list[str]]]:
    """A server that answers every request `204 No Content`; its URL and the requests it got."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_response(204)
            self.end_headers()

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def log_message(self, *_args: object) -> None:
            pass

    with http_server(Handler) as server:
        yield f"http://127.0.0.1:{server.server_port}/status", seen


@pytest.mark.services("broker")
@pytest.mark.proves_idempotent(task=fetch_status)
def test_a_status_check_delivered_twice_only_reads(shared_prefork_worker, answering_server):
    """The pattern's task on a worker, then the same message again (the same id): the same
    status, and the server saw two reads and nothing else (a POST would show here). (The
    session's worker: one delivery after the other, whatever its pool size.)"""
    url, seen = answering_server
    wp = shared_prefork_worker
    first = fetch_status.apply_async((url,), queue=wp.queue)
    assert first.get(timeout=30) == 204
    again = redeliver(wp, fetch_status, first, (url,))
    assert (again["status"], again["result"]) == ("SUCCESS", 204)
    assert seen == ["GET /status", "GET /status"]


@pytest.mark.antipattern(task=fetch_status_without_timeout)
def test_why_io_without_a_timeout_blocks_until_revoked(
    celery_app, worker_process, silent_socket, silent_server
):
    """Under the deployed REMAP_SIGTERM=SIGQUIT: the runbook's SIGQUIT ends the blocked process."""
    wp = worker_process(concurrency=1, env=deployed_signal_env())
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
    held = accept_request(silent_socket)  # the blocked call, from that process

    # Prefetch 1 with acks_late: the next task is not held by the busy worker, it waits in the
    # broker (any free worker could take it).
    assert "reserved" not in where_is(celery_app, waiting.id, [wp.queue])
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, wp.queue) == 1
    # A message waits in wp.queue, but a worker lists the queue in active_queues: not a routing
    # mistake, so not reported. And each single ask (no polling) finds the running task: the
    # inspect waits for the worker's answers instead of giving up before they arrive.
    for _ in range(3):
        again = where_is(celery_app, blocked.id, [wp.queue])
        assert (again.get("active"), again["unconsumed_queues"]) == (wp.hostname, {})

    terminate = runbook("terminate", TASK_ID=blocked.id, WORKER=wp.hostname)
    [replies] = json_lines(terminate)  # control commands answer with a list
    assert replies == [{wp.hostname: {"ok": f"terminate: {blocked.id}"}}]
    assert closed_by_peer(held)  # the process let go of the call: it exited
    pid = str(task["worker_pid"])
    wait_until(lambda: runbook("verify-gone", WORKER_PID=pid) == ["gone"], what="pid gone")
    wait_until(lambda: blocked.state == "REVOKED", what="REVOKED stored")

    # The worker keeps serving: a new process runs the next task, which has a timeout.
    with pytest.raises(requests.exceptions.ReadTimeout):
        waiting.get(timeout=60)
    assert task["worker_pid"] not in wp.pool_pids()
    assert blocked.state == "REVOKED"

    # The pool child stores the result before the main process acknowledges the message (acks
    # late): wait until the worker no longer lists the task as active, or the stop restores it.
    inspect = celery_app.control.inspect([wp.hostname], timeout=1)
    wait_until(lambda: (inspect.active() or {}).get(wp.hostname) == [], what="acked", context=wp)
    wp.stop()  # a clean stop returns every unacknowledged message to the queue...
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, wp.queue) == 0  # ...and there is none: terminate acked it


def test_why_terminate_with_sigterm_leaves_the_task_running(
    celery_app, worker_process, silent_socket, silent_server
):
    """ANTI-PATTERN: SIGTERM under REMAP_SIGTERM=SIGQUIT; REVOKED is stored, the task runs on."""
    wp = worker_process(concurrency=1, env=deployed_signal_env())
    blocked = fetch_status_without_timeout.apply_async((silent_server,), queue=wp.queue)
    found = poll(lambda: (f := where_is(celery_app, blocked.id, [wp.queue])).get("active") and f)
    assert found["active"] == wp.hostname
    held = accept_request(silent_socket)
    [pid] = wp.pool_pids()

    [replies] = json_lines(runbook("terminate-sigterm", TASK_ID=blocked.id, WORKER=wp.hostname))
    assert replies == [{wp.hostname: {"ok": f"terminate: {blocked.id}"}}]  # "success"
    wait_until(lambda: blocked.state == "REVOKED", what="REVOKED stored")
    # The worker has forgotten the task: a second terminate, even with the right signal, finds
    # nothing to signal; only a kill of the pid on the host would reach it.
    [again] = json_lines(runbook("terminate", TASK_ID=blocked.id, WORKER=wp.hostname))
    assert again == [{wp.hostname: {"ok": "terminate: tasks unknown"}}]
    assert wp.pool_pids() == [pid]

    # The "terminated" task is still inside its call: answer it, and it completes its work.
    held.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    wp.wait_for_log(f"Task {fetch_status_without_timeout.name}[{blocked.id}] succeeded")
    assert wp.pool_pids() == [pid]  # the same process, never signalled out of existence
    held.close()


@pytest.mark.deviation("--prefetch-multiplier=4", reason="the anti-pattern under test")
def test_why_a_large_prefetch_holds_tasks_behind_a_blocked_one(
    celery_app, worker_process, silent_server
):
    """two tasks reserved and `PENDING` with an empty queue; `revoke(terminate=True)` from Python
    frees them."""
    wp = worker_process(concurrency=1, args=["--prefetch-multiplier=4"], env=deployed_signal_env())
    blocked = fetch_status_without_timeout.apply_async((silent_server,), queue=wp.queue)
    behind = [charge.apply_async((n,), queue=wp.queue) for n in (1, 2)]

    def reserved() -> bool:
        return all(where_is(celery_app, r.id, []).get("reserved") == wp.hostname for r in behind)

    poll(reserved, timeout=60)  # received by the worker, PENDING, and going nowhere
    assert {r.state for r in behind} == {"PENDING"}
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, wp.queue) == 0  # no other worker can take them

    # The Python form. Name the signal: the default is TERM_SIGNAME of the *calling* process,
    # SIGTERM unless it too runs with REMAP_SIGTERM.
    celery_app.control.revoke(blocked.id, terminate=True, signal="SIGQUIT")
    assert [r.get(timeout=60) for r in behind] == [1, 2]
    assert blocked.state == "REVOKED"


@pytest.mark.services("broker")  # the runbook's `celery purge` runs in another process
def test_a_task_routed_to_an_unconsumed_queue_stays_pending_and_the_check_finds_it(
    celery_app, celery_worker
):
    """`PENDING`, and `unconsumed_queues` names the queue with its one message; the runbook's
    `purge` removes it (`Purged 1 message`) and the task stays `PENDING` for good."""
    queue = f"nobody-consumes-{uuid.uuid4().hex[:8]}"  # a failed run's message stays its own
    lost = charge.apply_async((5,), queue=queue)
    found = where_is(celery_app, lost.id, [queue, celery_app.conf.task_default_queue])
    assert found.pop("workers")  # the in-thread worker answered the ping
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
    done = fresh_python(NO_BACKEND, env, timeout=60)
    assert done.returncode == 0, done.stderr
    state, get, _see_docs = done.stdout.splitlines()
    assert state == "AttributeError 'DisabledBackend' object has no attribute '_get_task_meta_for'"
    assert get.startswith("NotImplementedError No result backend is configured")


@contextmanager
def private_broker(tmp_path) -> Iterator[str]:
    """The URL of a broker of this test's own, of the run's kind: a redis-server on Redis, a
    virtual host of the shared server on RabbitMQ. No other worker of the run answers there."""
    url = settings.CELERY_BROKER_URL
    server = PrivateVhost(url) if url.startswith(("amqp", "pyamqp")) else PrivateRedis(tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_with_no_worker_answering_where_is_asks_nobody(worker_process, tmp_path, monkeypatch):
    """A frozen worker (SIGSTOP: its main process answers nothing) on a broker of the test's own
    (its own redis-server, or its own RabbitMQ virtual host): `workers` is empty, the queue is
    reported, and no inspect goes out: an empty destination would broadcast to every worker and
    wait the whole timeout for each question (without `if workers:`, the spy below records the
    inspect whose four questions would go out)."""
    with private_broker(tmp_path) as url:
        wp = worker_process(concurrency=1, env={"CELERY_BROKER_URL": url}, ready=False)
        wp.wait_for_log(" ready.", timeout=60)
        app = Celery("snippets", set_as_current=False)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.broker_read_url = app.conf.broker_write_url = url
        waiting = app.send_task(charge.name, (1,), queue="nobody-consumes-this")
        inspects: list[dict] = []
        inspect = app.control.inspect
        monkeypatch.setattr(
            app.control, "inspect", lambda *a, **kw: inspects.append(kw) or inspect(*a, **kw)
        )
        os.kill(wp.proc.pid, signal.SIGSTOP)
        try:
            found = where_is(app, waiting.id, ["nobody-consumes-this", wp.queue])
        finally:
            os.kill(wp.proc.pid, signal.SIGCONT)
        assert inspects == []  # no question went out, not even one
        assert found["unconsumed_queues"] == {"nobody-consumes-this": 1}
        assert found["workers"] == []
        wp.stop()
