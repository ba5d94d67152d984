"""Fixtures of the monitoring section: a real Flower process, free ports, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, require_services, worker_env

FLOWER_SH = ROOT / "snippets/monitoring/flower.sh"
AUTH = ("ops", "s3cret-for-tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(check: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    """Call `check` until it returns something truthy; fail with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"condition not met after {timeout}s; last: {last!r}")


def tool_env(covered: bool = False, **extra: str) -> dict[str, str]:
    """worker_env() with this interpreter's bin directory first, so `celery` is the venv's.

    Tools that run none of our snippets' code (Flower, `celery inspect`) start without coverage:
    measuring them only slows every run.
    """
    env = worker_env(**extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if not covered:
        env.pop("COVERAGE_PROCESS_CONFIG", None)
        env.pop("COVERAGE_PROCESS_START", None)
    return env


@dataclass
class FlowerProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def flower(celery_app, tmp_path_factory) -> Iterator[Callable[..., FlowerProcess]]:
    """Factory: run snippets/monitoring/flower.sh (the page's command) on a free port.

    Module-scoped (a Flower takes seconds to start): its state is shared by the module's tests,
    which therefore only look at their own tasks and workers.
    """
    require_services("broker")
    tmp_path = tmp_path_factory.mktemp("flower")
    started: list[FlowerProcess] = []

    def start(args: list[str] | None = None, **env: str) -> FlowerProcess:
        port = free_port()
        log_path = tmp_path / f"flower-{len(started)}.log"
        env = {"FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": ":".join(AUTH), **env}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                ["sh", str(FLOWER_SH), *(args or [])], cwd=ROOT, env=tool_env(**env),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        fp = FlowerProcess(proc, f"http://127.0.0.1:{port}", log_path)
        started.append(fp)

        probe = str(uuid.uuid4())

        def up() -> bool:
            """Up means listening to events: /healthcheck answers before the receiver binds."""
            if proc.poll() is not None:
                raise RuntimeError(f"flower exited with {proc.returncode}:\n{fp.log()}")
            if requests.get(f"{fp.url}/healthcheck", timeout=2).text != "OK":
                return False
            with celery_app.connection_for_write() as conn:
                celery_app.events.Dispatcher(conn).send("task-sent", uuid=probe, name="probe")
            info = requests.get(f"{fp.url}/api/task/info/{probe}", auth=AUTH, timeout=2)
            return info.status_code == 200

        poll(up, timeout=60, interval=0.5)
        return fp

    yield start
    for fp in started:
        fp.stop()


@pytest.fixture(scope="module")
def running_flower(flower) -> FlowerProcess:
    """One Flower shared by a module's tests (each looks only at its own tasks and workers)."""
    return flower()


@dataclass
class ExporterProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, metric: str, **labels: str) -> float:
        return self.scrape().get((metric, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def exporter_queues() -> list[str]:
    return [f"prom-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]


@pytest.fixture(scope="module")
def exporter(celery_app, exporter_queues, tmp_path_factory) -> Iterator[ExporterProcess]:
    """`python -m snippets.monitoring.prometheus` (the page's exporter) on a free port."""
    require_services("broker")
    port = free_port()
    log_path = tmp_path_factory.mktemp("exporter") / "exporter.log"
    queues = [f"--queue={q}" for q in exporter_queues]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snippets.monitoring.prometheus", f"--port={port}", *queues],
            cwd=ROOT, env=tool_env(covered=True), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    ep = ExporterProcess(proc, f"http://127.0.0.1:{port}", log_path)

    def up() -> bool:
        """Up means consuming events: /metrics answers before the event receiver binds."""
        if proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {proc.returncode}:\n{ep.log()}")
        with celery_app.connection_for_write() as conn:
            celery_app.events.Dispatcher(conn).send(
                "task-sent", uuid=str(uuid.uuid4()), name="probe"
            )
        return ep.value("celery_task_events_total", name="probe", event="sent") > 0

    try:
        poll(up, timeout=60)
        yield ep
    finally:
        proc.terminate()  # SIGTERM: the exporter stops consuming and exits cleanly
        try:
            assert proc.wait(20) == 0, ep.log()
        finally:
            if proc.poll() is None:
                proc.kill()
            with celery_app.connection_for_write() as conn:
                for queue in exporter_queues:
                    with contextlib.suppress(Exception), conn.channel() as channel:
                        channel.queue_delete(queue)
