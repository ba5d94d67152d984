"""A PostgreSQL cluster of a test's own: its own data directory, port and server settings.

Never the shared server: a proof that fills `max_connections` would refuse every other test's
connection there. Like the private RabbitMQ node (`tests.harness.brokers`), the server runs as
an unprivileged user (PostgreSQL refuses to run as root), `postgres` by default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.net import free_port
from tests.harness.services import require_tool

BIN = Path(os.environ.get("SNIPPETS_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivatePostgres:
    """`initdb` + `pg_ctl start` on a free loopback port, trust authentication, the given
    server settings (`-c name=value`); `stop()` removes the cluster."""

    def __init__(self, user: str = "postgres", **settings: object) -> None:
        require_tool("initdb", [str(BIN / "initdb"), "--version"])
        self.user = user
        self.port = free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "fsync": "off", **settings}
        # Not under pytest's tmp_path: the server's user must own and reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="private-pg-"))
        self.dir.chmod(0o777)
        self.data = self.dir / "data"
        self.url = f"postgres://{user}@127.0.0.1:{self.port}/postgres"

    def run(self, *argv: str, timeout: float = 120) -> str:
        """A PostgreSQL program run as the server's user."""
        return subprocess.run(
            ["runuser", "-u", self.user, "--", str(BIN / argv[0]), *argv[1:]],
            check=True,
            timeout=timeout,
            capture_output=True,
            text=True,
            cwd=self.dir,
        ).stdout

    def start(self) -> PrivatePostgres:
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        sockets = self.dir / "sockets"
        sockets.mkdir()
        shutil.chown(sockets, self.user)
        options += f" -p {self.port} -k {sockets}"
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start"
        )
        return self

    @property
    def conninfo(self) -> str:
        """For psycopg.connect()."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def database(self, name: str = "postgres") -> dict[str, object]:
        """A Django DATABASES entry for this cluster."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": self.user,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }

    def stop(self) -> None:
        if self.data.exists():
            pg_ctl = ["runuser", "-u", self.user, "--", str(BIN / "pg_ctl"), "-D", str(self.data)]
            subprocess.run(
                [*pg_ctl, "-m", "immediate", "-w", "stop"],
                timeout=60,
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
