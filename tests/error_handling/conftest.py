"""Fixtures of the error-handling proofs: a scriptable billing API and a silent server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.error_handling.helpers import BillingAPI
from tests.harness.net import http_server, silent_listener


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

    with http_server(Handler) as server:
        api.url = f"http://127.0.0.1:{server.server_port}"
        settings.BILLING_API_URL = api.url
        yield api


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung HTTP or SMTP server)."""
    with silent_listener() as server:
        yield server.getsockname()[1]
