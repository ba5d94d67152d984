"""Fixtures of the monitoring section: a real Flower and the page's exporter, on free ports."""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import requests

from tests.harness.celery import delete_queues
from tests.harness.net import free_port
from tests.harness.services import require_services
from tests.monitoring.helpers import AUTH, FLOWER_SH, ExporterProcess, HttpProcess, poll, tool_env


@pytest.fixture(scope="module")
def flower(celery_app, tmp_path_factory) -> Iterator[Callable[..., HttpProcess]]:
    """Factory: run snippets/monitoring/flower.sh (the page's command) on a free port.

    Module-scoped (a Flower takes seconds to start): its state is shared by the module's tests,
    which therefore only look at their own tasks and workers.
    """
    require_services("broker")
    tmp_path = tmp_path_factory.mktemp("flower")
    with ExitStack() as stack:

        def start(args: list[str] | None = None, **env: str) -> HttpProcess:
            port = free_port()
            env = {"FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": ":".join(AUTH), **env}
            fp = HttpProcess.spawn(
                ["sh", str(FLOWER_SH), *(args or [])],
                env=tool_env(**env),
                name="flower",
                log_path=tmp_path / f"flower-{port}.log",
            )
            fp.url = f"http://127.0.0.1:{port}"
            stack.callback(fp.stop, signal.SIGTERM, timeout=20, group=True)
            probe = str(uuid.uuid4())

            def up() -> bool:
                """Up means listening to events: /healthcheck answers before the receiver."""
                fp.check_alive()
                if requests.get(f"{fp.url}/healthcheck", timeout=2).text != "OK":
                    return False
                with celery_app.connection_for_write() as conn:
                    celery_app.events.Dispatcher(conn).send("task-sent", uuid=probe, name="probe")
                info = requests.get(f"{fp.url}/api/task/info/{probe}", auth=AUTH, timeout=2)
                return info.status_code == 200

            poll(up, timeout=60, interval=0.5, what="flower receives events", context=fp)
            return fp

        yield start


@pytest.fixture(scope="module")
def running_flower(flower) -> HttpProcess:
    """One Flower shared by a module's tests (each looks only at its own tasks and workers)."""
    return flower()


@pytest.fixture(scope="module")
def exporter_queues() -> list[str]:
    return [f"prom-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]


@pytest.fixture(scope="module")
def exporter(celery_app, exporter_queues, tmp_path_factory) -> Iterator[ExporterProcess]:
    """`python -m snippets.monitoring.prometheus` (the page's exporter) on a free port."""
    require_services("broker")
    port = free_port()
    queues = [f"--queue={q}" for q in exporter_queues]
    ep = ExporterProcess.spawn(
        [sys.executable, "-m", "snippets.monitoring.prometheus", f"--port={port}", *queues],
        # PYTHONUNBUFFERED unset, as under systemd: the exporter's own flush puts its start-up
        # line in the log (tests/monitoring/test_prometheus.py)
        env=tool_env(covered=True, PYTHONUNBUFFERED=None),
        name="exporter",
        log_path=tmp_path_factory.mktemp("exporter") / "exporter.log",
    )
    ep.url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        """Up means consuming events: /metrics answers before the event receiver binds."""
        ep.check_alive()
        with celery_app.connection_for_write() as conn:
            celery_app.events.Dispatcher(conn).send(
                "task-sent", uuid=str(uuid.uuid4()), name="probe"
            )
        return ep.value("celery_task_events_total", name="probe", event="sent") > 0

    try:
        poll(up, timeout=60, what="the exporter counts events", context=ep)
        yield ep
    finally:
        # SIGTERM: the exporter stops consuming and exits cleanly
        assert ep.stop(signal.SIGTERM, timeout=20) == 0, ep.log()
        delete_queues(celery_app, *exporter_queues)
