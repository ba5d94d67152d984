"""Fixtures of the periodic-tasks proofs: real `celery beat` subprocesses and queue readers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from amqp.exceptions import ChannelError
from kombu import Exchange, Queue

from tests.conftest import ROOT, require_services, worker_env

SENDING = re.compile(r"Scheduler: Sending due task (?P<entry>\S+) \((?P<task>[^)]+)\)")
# At DEBUG, beat confirms each publish after its "Sending due task" line: "<task> sent. id->".
LINE = re.compile(r"^\[(?P<at>[\d-]+ [\d:,]+): \w+/(?P<proc>[\w-]+)\] (?P<msg>.*)$", re.M)
SENT = re.compile(r"^\S+ sent\. id->(?P<id>[\w-]+)")


@dataclass
class Send:
    """A publish that beat confirmed: the entry, the message id, when."""

    entry: str
    id: str
    at: datetime


def confirmed_sends(log: str, entry: str | None = None) -> list[Send]:
    """Publishes confirmed in a beat's DEBUG log. A beat stopped by a signal may be stopped
    between its "Sending" line and the publish, or between the publish and this confirmation,
    so the queue can hold one message more than this per beat, never one less."""
    sends, pending = [], {}  # process -> (entry, time) announced, not yet confirmed
    for line in LINE.finditer(log):
        if m := SENDING.search(line["msg"]):
            at = datetime.strptime(line["at"], "%Y-%m-%d %H:%M:%S,%f")
            pending[line["proc"]] = (m["entry"], at)
        elif (m := SENT.match(line["msg"])) and line["proc"] in pending:
            entry_name, at = pending.pop(line["proc"])
            sends.append(Send(entry_name, m["id"], at))
    return [s for s in sends if entry is None or s.entry == entry]


@dataclass
class BeatProcess:
    """A real `python -m celery -A snippets.project beat` subprocess."""

    proc: subprocess.Popen
    name: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sends(self, entry: str | None = None) -> list[str]:
        """Entries this beat logged as sent ("Scheduler: Sending due task ..."), in order."""
        found = [m["entry"] for m in SENDING.finditer(self.log())]
        return [e for e in found if entry is None or e == entry]

    def confirmed(self, entry: str | None = None) -> list[Send]:
        return confirmed_sends(self.log(), entry)

    def wait_for(self, predicate: Callable[[BeatProcess], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"beat {self.name} exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"beat {self.name}: condition not met in {timeout}s:\n{self.log()}")

    def wait_for_sends(self, count: int, entry: str | None = None, timeout: float = 60) -> None:
        self.wait_for(lambda beat: len(beat.sends(entry)) >= count, timeout)

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda beat: text in beat.log(), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Stop it (SIGTERM lets beat sync its schedule and coverage save its data)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def beat_process(tmp_path, request) -> Iterator[Callable[..., BeatProcess]]:
    """Factory: start a real `celery beat`; every one is stopped after the test.

    ``beat_process(schedule={...}, scheduler=None, max_interval=1, schedule_file=None, env={})``;
    ``schedule`` is the JSON form read by tests/periodic_tasks/beat_settings.py.
    """
    require_services("broker")
    started: list[BeatProcess] = []

    def start(
        schedule: dict | None = None,
        scheduler: str | None = None,
        max_interval: float = 1,
        schedule_file: Path | None = None,
        loglevel: str = "DEBUG",
        env: dict[str, str] | None = None,
    ) -> BeatProcess:
        name = f"beat{len(started)}-{uuid.uuid4().hex[:6]}"
        log_path = tmp_path / f"{name}.log"
        cmd = [
            sys.executable, "-m", "celery", "-A", "snippets.project", "beat",
            f"--loglevel={loglevel}", f"--max-interval={max_interval}",
            f"--schedule={schedule_file or tmp_path / f'{name}-schedule'}",
            f"--pidfile={tmp_path / f'{name}.pid'}",
            *([f"--scheduler={scheduler}"] if scheduler else []),
        ]  # fmt: skip
        env = worker_env(
            DJANGO_SETTINGS_MODULE="tests.periodic_tasks.beat_settings",
            PERIODIC_TEST_SCHEDULE=json.dumps(schedule or {}),
            **(env or {}),
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        beat = BeatProcess(proc, name, log_path)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


@pytest.fixture
def queue_name(request) -> Iterator[str]:
    """A queue of this test's own, for the periodic sends; deleted after the test."""
    from snippets.project.celery import app

    name = f"periodic-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
    yield name
    with app.connection_for_write() as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_delete(name)


def read_queue(name: str) -> list[dict]:
    """Take every message out of a queue: the task name, id, args and expiry of each."""
    from snippets.project.celery import app

    messages = []
    with app.connection_for_write() as conn:
        bound = Queue(name, Exchange(name), routing_key=name)(conn.default_channel)
        bound.declare()
        while (message := bound.get(no_ack=True)) is not None:
            headers = message.headers
            messages.append(
                {"task": headers["task"], "id": headers["id"], "expires": headers.get("expires"),
                 "args": message.decode()[0]}
            )  # fmt: skip
    return messages


def queue_length(name: str) -> int:
    """Messages ready in a queue (not counting those a consumer holds unacknowledged)."""
    from snippets.project.celery import app

    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=name, passive=True).message_count
        except ChannelError:  # Redis: an emptied queue has no key, so it is "not found"
            return 0
