"""Loopback servers a proof starts: a free port, an HTTP server in a thread, a silent listener."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """`handler` served on 127.0.0.1 (a free port: `server.server_port`) by a thread; shut
    down and closed on exit. A worker subprocess reaches it as it would a real API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_listener() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 that never answers: the kernel completes a client's
    connect (the backlog), then nothing is said, as with a hung HTTP or SMTP server. A proof
    that must hold the client's connection itself calls `accept()` on it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server
