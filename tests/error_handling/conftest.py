"""Fixtures of the error-handling proofs: a scriptable billing API, and worker-loss helpers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Reply:
    """What the fake API answers to the next POST /invoices."""

    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    create: bool = True  # create (or find) the invoice before answering, even on an error
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class BillingAPI:
    """A stand-in for an external billing API that honours Idempotency-Key like real ones do."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)  # consumed in order; then 201s
    always: Reply | None = None  # when set, the answer to every request
    requests: list[dict] = field(default_factory=list)
    invoices: dict[str, str] = field(default_factory=dict)  # idempotency key -> remote id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: dict, key: str | None) -> tuple[Reply, dict]:
        with self.lock:
            reply = self.always or (self.script.pop(0) if self.script else Reply())
            self.requests.append({"body": body, "key": key, "at": time.monotonic()})
            payload: dict = {"error": "scripted"}
            if reply.create:
                new_id = f"inv_{len(self.invoices) + 1}"
                remote_id = self.invoices.setdefault(key or new_id, new_id)
                payload = {"id": remote_id}
        return reply, payload


@pytest.fixture
def billing_api(settings) -> Iterator[BillingAPI]:
    """The fake API on 127.0.0.1; settings.BILLING_API_URL points the tasks at it."""
    api = BillingAPI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            reply, payload = api.handle(body, self.headers.get("Idempotency-Key"))
            time.sleep(reply.delay)
            data = json.dumps(payload).encode()
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (its read timeout): like a real server, carry on

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_port}"
    settings.BILLING_API_URL = api.url
    yield api
    server.shutdown()
    server.server_close()


def wait_until(predicate: Callable[[], object], timeout: float = 60, what: str = "") -> object:
    """Poll `predicate` until it returns something truthy; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


def sigkill(pid: int) -> None:
    """SIGKILL one process by pid (a pool child): what the OOM killer does."""
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung HTTP or SMTP server)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def kill_the_child_running(key: str, attempt: int = 1, timeout: float = 60) -> int:
    """Wait until the `attempt`-th run of the work for `key` has started; SIGKILL its process.

    The task itself records the pid of the pool child that runs it (PaymentAttempt), so the
    kill hits exactly that child, whatever else the pool is doing. Returns the killed pid.
    """
    from snippets.error_handling.models import PaymentAttempt

    def started() -> int | None:
        pids = list(PaymentAttempt.objects.filter(key=key).order_by("pk").values_list("pid"))
        return pids[attempt - 1][0] if len(pids) >= attempt else None

    pid = wait_until(started, timeout, what=f"attempt {attempt} of {key}")
    sigkill(pid)
    return pid


def attempts(key: str) -> int:
    from snippets.error_handling.models import PaymentAttempt

    return PaymentAttempt.objects.filter(key=key).count()


def retries_seen(key: str) -> list[int]:
    """request.retries of each run of the work for `key`, in order."""
    from snippets.error_handling.models import PaymentAttempt

    return list(
        PaymentAttempt.objects.filter(key=key).order_by("pk").values_list("retries", flat=True)
    )


def payments(key: str) -> int:
    from snippets.error_handling.models import Payment

    return Payment.objects.filter(key=key).count()
