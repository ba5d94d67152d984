"""Helpers of the troubleshooting proofs."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

from tests.harness.net import free_port


class BrokerPort:
    """A loopback port that becomes the run's broker when `open()`ed (it forwards every
    connection to the real server): to a client, the broker at this address is down until
    then, and up after. `cut()` drops every open connection at once, as a broker that dies
    does; new connections are forwarded again."""

    def __init__(self, broker_url: str) -> None:
        parts = urlsplit(broker_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port)
        self.port = free_port()
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{self.port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            dropped, self.sockets = self.sockets, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.cut()
