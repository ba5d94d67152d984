"""Fixtures of the recipes tests: a real (tiny) SMTP server and the payment provider."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class SMTPServer:
    """Speaks enough SMTP for smtplib; scripted to refuse, the way real servers do.

    ``busy_connections``: how many connections get "421 try again later" at the greeting
    (a transient refusal); ``rcpt_refusals``: replies for the next RCPT TOs ("450 ...", "550 ...");
    ``refuse_sender``: answer MAIL FROM with "550 sender rejected";
    ``data_delay``: seconds to wait before accepting a message (a slow server).
    """

    host: str = "127.0.0.1"
    port: int = 0
    busy_connections: int = 0
    rcpt_refusals: list[str] = field(default_factory=list)
    refuse_sender: bool = False
    data_delay: float = 0.0
    connections: int = 0
    messages: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(server: SMTPServer) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            with server.lock:
                server.connections += 1
                busy = server.connections <= server.busy_connections
            if busy:
                self.reply("421 4.3.2 Service busy, try again later")
                return
            self.reply("220 smtp.test ESMTP")
            sender, rcpts = None, []
            while line := self.rfile.readline():
                verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250 smtp.test")
                elif verb == "MAIL" and server.refuse_sender:
                    self.reply("550 5.7.1 Sender rejected")
                elif verb == "MAIL":
                    sender, rcpts = line.decode().strip(), []
                    self.reply("250 OK")
                elif verb == "RCPT":
                    if server.rcpt_refusals:
                        self.reply(server.rcpt_refusals.pop(0))
                    else:
                        rcpts.append(line.decode().strip())
                        self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 End data with <CR><LF>.<CR><LF>")
                    body = []
                    while (data := self.rfile.readline()) not in (b".\r\n", b""):
                        body.append(data.decode(errors="replace"))
                    time.sleep(server.data_delay)
                    with server.lock:
                        server.messages.append({"from": sender, "to": rcpts, "data": "".join(body)})
                    self.reply("250 OK queued")
                elif verb == "RSET":
                    self.reply("250 OK")
                elif verb == "QUIT":
                    self.reply("221 Bye")
                    return
                else:
                    self.reply("502 Command not implemented")

    return Handler


@pytest.fixture
def smtp_server(settings) -> Iterator[SMTPServer]:
    """A real SMTP exchange over TCP; Django's SMTP backend is pointed at it for the test."""
    state = SMTPServer()
    tcp = socketserver.ThreadingTCPServer((state.host, 0), _handler(state))
    tcp.daemon_threads = True
    state.port = tcp.server_address[1]
    thread = threading.Thread(target=tcp.serve_forever, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = state.host, state.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    try:
        yield state
    finally:
        tcp.shutdown()
        tcp.server_close()


@pytest.fixture
def provider(settings):
    """The stand-in payment provider over HTTP; the client is pointed at it for the test."""
    from snippets.recipes.payments import FakeProvider, serve_provider

    state = FakeProvider()
    server = serve_provider(state)
    settings.PAYMENTS_URL = f"http://127.0.0.1:{server.server_port}"
    settings.PAYMENTS_TIMEOUT = 5
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
