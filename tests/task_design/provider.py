"""A fake payment provider for the idempotency proofs: an HTTP server in a thread.

It honours the ``Idempotency-Key`` header the way real providers do (Stripe, Adyen...): a
request with a key it has already charged gets the same charge back, nothing new. It can
hold a request mid-way so a test can kill the client there, and then decide what a real
provider may do with a request whose client vanished: charge anyway, or drop it.
"""

from __future__ import annotations

import json
import select
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Provider:
    """State of the fake provider: every request seen, every charge made."""

    hold_first: bool = False  # keep the first request waiting until `release` is set
    charge_if_client_gone: bool = True  # after the hold: charge a request whose client died?
    requests: list[str] = field(default_factory=list)
    charges: dict[str, str] = field(default_factory=dict)  # idempotency key -> charge id
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def charge(self, key: str) -> str:
        with self.lock:
            return self.charges.setdefault(key, f"ch_{len(self.charges) + 1}")


def client_gone(handler: BaseHTTPRequestHandler) -> bool:
    """The client's socket is closed (its process was killed): readable with nothing to read."""
    sock = handler.connection
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, 2) == b""  # 2 = MSG_PEEK


def handler_for(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            key = self.headers["Idempotency-Key"]
            with provider.lock:
                provider.requests.append(key)
                first = len(provider.requests) == 1
            if first and provider.hold_first:
                provider.holding.set()
                provider.release.wait(60)
                if client_gone(self) and not provider.charge_if_client_gone:
                    return  # the request never completed: nothing charged
            body = json.dumps({"id": provider.charge(key)}).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client is gone: the charge stands, the answer is lost
                pass

    return Handler


def start(provider: Provider) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(provider))
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
