"""A RabbitMQ node of a test's own: its own port, data directory, node name and configuration.

Never the shared server: a proof that restarts the broker, or needs a setting only the
server's configuration holds (consumer_timeout), starts one of these. A proof that only needs
a broker no other worker uses takes a virtual host of its own on the shared server instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
from kombu import Connection

from tests.harness.net import free_port
from tests.harness.wait import wait_until


class PrivateRabbit:
    """A RabbitMQ node of this test's own (its own port, data directory and node name)."""

    def __init__(self, advanced_config: str = "") -> None:
        """`advanced_config`: Erlang terms for the node's advanced.config (e.g. a short
        consumer_timeout); by default the node reads no configuration file."""
        self.port = free_port()
        self.node = f"chaos{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        # Not under pytest's tmp_path: the node runs as the rabbitmq user, who must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-rabbit-"))
        self.dir.chmod(0o777)
        (self.dir / "plugins").write_text("[].\n")
        self.advanced = self.dir / "advanced.config"
        self.advanced.write_text(advanced_config or "[].\n")

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            check=True,
            timeout=timeout,
            capture_output=True,
            text=True,
        ).stdout

    def start(self) -> None:
        env = {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "none"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.advanced),
        }
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env={**os.environ, **env},
            check=True,
            cwd=self.dir,
            timeout=60,
        )
        # Each `rabbitmqctl` boots an Erlang VM (0.7 CPU-s or more: .ci/run), and
        # await_startup fails at once until the node has registered with epmd: polled every
        # 0.5 s, it cost a few CPU-s per start. The node opens its AMQP port at the end of its
        # boot, so wait for that (a connect), then ask await_startup once.
        wait_until(self.listening, 120, what=f"RabbitMQ node {self.node} listening", interval=0.2)
        wait_until(self.started, 120, what=f"RabbitMQ node {self.node} started", interval=0.5)

    def listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def started(self) -> bool:
        try:
            self.ctl("await_startup", "--timeout", "60", timeout=70)
        except subprocess.CalledProcessError:
            return False
        return True

    def restart(self) -> None:
        """Killed like a crash (SIGKILL of the node's Erlang VM, at once: `rabbitmqctl stop_app`
        takes seconds to start, long enough for the worker to drain the backlog), then started
        on the same data directory."""
        [pid_file] = (self.dir / "mnesia").glob("*.pid")
        node = psutil.Process(int(pid_file.read_text()))
        node.send_signal(signal.SIGKILL)
        node.wait(60)
        self.start()

    def ready(self, queue: str) -> int:
        """Messages of `queue` waiting for a consumer (a passive declare); -1 while starting."""
        conn = Connection(self.url, connect_timeout=10)
        try:
            with conn:
                return conn.default_channel.queue_declare(queue, passive=True).message_count
        except (*conn.connection_errors, *conn.channel_errors, OSError):
            return -1  # the node is still starting: no answer yet

    def pending(self, queue: str) -> int:
        """Messages of `queue` not yet acknowledged: ready ones (a passive declare), else
        ready plus delivered from the node (rabbitmqctl, slower: only when none is ready)."""
        if (ready := self.ready(queue)) != 0:
            return ready
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages")
        counts = dict(line.split() for line in out.splitlines() if line.strip())
        return int(counts.get(queue, 0))

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "shutdown"],
            timeout=60,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateVhost:
    """A virtual host of this test's own on the run's RabbitMQ server (`rabbitmqctl`): no
    other worker of the run shares its queues or its remote-control exchange."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self.name = f"private-{uuid.uuid4().hex[:8]}"
        self.user = parts.username or "guest"
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=60, capture_output=True)

    def start(self) -> None:
        self.ctl("add_vhost", self.name)
        self.ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def stop(self) -> None:
        self.ctl("delete_vhost", self.name)
