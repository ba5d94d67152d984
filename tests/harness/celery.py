"""Celery workers and beat as processes, started the way the recommended deployment starts them.

:func:`running_worker` and :func:`running_beat` are context managers usable at any fixture
scope (as ``celery.contrib.testing.worker.start_worker`` is); the fixtures in ``tests/
conftest.py`` are thin wrappers over them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

from tests.harness import deployment
from tests.harness.process import ROOT, Process
from tests.harness.wait import wait_until

CELERY = [sys.executable, "-m", "tests.covered_celery"]
HARNESS_FLAGS = ["--without-gossip", "--without-mingle"]  # see deployment.HARNESS_DEVIATIONS
PROJECT_SETTINGS = "snippets.project.settings"


CLI_ENVVARS = ("APP", "BROKER_URL", "RESULT_BACKEND", "LOADER", "CONFIG_MODULE", "SKIP_CHECKS")
"""Variables the `celery` command reads as its global options (celery/bin/celery.py: `envvar=`
of -A, -b, --result-backend, --loader, --config, --skip-checks): an exported RESULT_BACKEND
overrides the settings' CELERY_RESULT_BACKEND, so a proof of the django-db backend would run
on Redis. Not in the deployment's environment (celery.env); a test that wants one passes it."""


def worker_env(**extra: str | None) -> dict[str, str]:
    """The environment of a subprocess of the snippets project, on the test databases.

    The project's settings unless `extra` names others; a None value unsets the variable.
    """
    from django.db import connections

    env: dict[str, str | None] = {**os.environ, "DJANGO_SETTINGS_MODULE": PROJECT_SETTINGS}
    for name in CLI_ENVVARS:  # a developer's shell must not change what the proofs start
        env.pop(name, None)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for alias in connections:
        env[f"SNIPPETS_{alias.upper()}_DB_NAME"] = str(connections[alias].settings_dict["NAME"])
    return {key: value for key, value in env.items() if value is not None}


@dataclass(repr=False)
class WorkerProcess(Process):
    """A real `celery worker` subprocess consuming its own queue."""

    hostname: str = ""
    queue: str = ""
    app: object = field(default=None, repr=False)

    def pool_pids(self) -> list[int]:
        """Pids of the pool's child processes (empty for solo/threads pools)."""
        try:
            return sorted(c.pid for c in psutil.Process(self.proc.pid).children())
        except psutil.NoSuchProcess:
            return []

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker answers a remote-control ping (it consumes by then)."""
        wait_ping(self.app, self.hostname, timeout, proc=self, logged=f"{self.hostname} ready.")

    def acked_while_running(self, task_id: str, timeout: float = 60) -> bool:
        """Whether the worker has acked the message of `task_id` while the task still runs (its
        request as `inspect active` shows it): an unacked one is the broker's to hand out again
        when the whole node is lost, whatever the worker itself can still do."""

        def running() -> dict | None:
            control = self.app.control.inspect([self.hostname], timeout=1, limit=1)
            replies = control.active() or {}
            return next((r for r in replies.get(self.hostname, []) if r["id"] == task_id), None)

        found = wait_until(running, timeout, what=f"{task_id} running", context=self)
        return found["acknowledged"]


def wait_ping(
    app: object,
    hostname: str,
    timeout: float = 60,
    proc: Process | None = None,
    logged: str | None = None,
) -> None:
    """Until the node (a worker, or beat with remote control) answers a ping; fails early if
    `proc` exits. A ping waits up to 0.5 s for the reply, and one sent before the node listens
    is never answered (a broadcast reaches only the nodes bound at the time): with `logged`,
    the text the node logs once it listens (a worker's "<hostname> ready."), the first ping
    waits for that line, or LOG_GRACE seconds for a node that logs less."""
    since = time.monotonic()

    def answers() -> bool:
        if proc is not None:
            proc.check_alive()
            if logged and logged not in proc.log() and time.monotonic() - since < LOG_GRACE:
                return False
        return bool(app.control.ping(destination=[hostname], timeout=0.5))

    wait_until(answers, timeout, what=f"{hostname} answers a ping", interval=0.05, context=proc)


LOG_GRACE = 20  # seconds: a worker whose log level hides "ready." is pinged after this


def worker_argv(
    *,
    hostname: str,
    queue: str,
    pool: str = "prefork",
    concurrency: int = 1,
    app: str | None = None,
    args: Iterable[str] = (),
) -> list[str]:
    """The unit's ExecStart, with this proof's node name, queue, pool size and extra flags."""
    argv = []
    for arg in deployment.recommended().argv:
        name = arg.partition("=")[0]
        replaced = {"--hostname": hostname, "--queues": queue, "--concurrency": concurrency}
        argv.append(f"{name}={replaced[name]}" if name in replaced else arg)
    if app is not None:
        argv[argv.index("-A") + 1] = app
    pool_flag = [] if pool == "prefork" else [f"--pool={pool}"]
    return [*argv, *pool_flag, *HARNESS_FLAGS, *args]


@contextlib.contextmanager
def running_worker(
    app: object,
    log_dir: Path,
    *,
    pool: str = "prefork",
    concurrency: int = 1,
    queue: str | None = None,
    args: Iterable[str] = (),
    env: Mapping[str, str | None] | None = None,
    ready: bool = True,
    celery_app: str | None = None,
    name: str | None = None,
    deviations: Iterable[str] = (),
    stop_timeout: float = 20,
) -> Iterator[WorkerProcess]:
    """A `celery worker` subprocess under the recommended deployment; stopped on exit.

    `env` is what the proof changes (None unsets a variable); every difference from the
    recommended deployment must be named in `deviations` (the test's `deviation` marks).
    On exit: SIGTERM (as systemd and Kubernetes stop it), then `TEARDOWN`'s escalation, SIGKILL
    after `stop_timeout`, and its queue deleted.
    """
    name = name or f"wp-{uuid.uuid4().hex[:8]}"
    queue = queue or f"q-{name}"
    argv = worker_argv(
        hostname=f"{name}@%h",
        queue=queue,
        pool=pool,
        concurrency=concurrency,
        app=celery_app,
        args=args,
    )
    asked = {**deployment.recommended().env, **(env or {})}
    deployment.check(deployment.differences(argv, asked), deviations)
    started = time.monotonic()
    wp = WorkerProcess.spawn(
        [*CELERY, *argv],
        log_path=log_dir / f"{name}.log",
        env=worker_env(**asked),
        name=name,
        hostname=f"{name}@{socket.gethostname()}",
        queue=queue,
        app=app,
    )
    try:
        if ready:
            wp.wait_ready()
            TIMINGS.append(("worker start", time.monotonic() - started))
        yield wp
    finally:
        stopping = time.monotonic()
        wp.stop(signal.SIGTERM, timeout=stop_timeout, escalate=TEARDOWN)
        TIMINGS.append(("worker stop", time.monotonic() - stopping))
        delete_queues(app, queue)


SOFT_WAIT = "Initiating Soft Shutdown"  # sleeping out the window: Worker.wait_for_soft_shutdown
CANCELLED = "Waiting gracefully for cold shutdown to complete"  # during_soft_shutdown's reply
TEARDOWN = (
    (2.0, signal.SIGQUIT, SOFT_WAIT),
    (1.0, signal.SIGQUIT, CANCELLED),
    (1.0, signal.SIGQUIT),
)
"""After a proof, its worker has nothing left to show: end its shutdown as "hitting Ctrl+C
again" does, instead of sleeping out the 50 s soft-shutdown window of an active request (the
SIGKILL at `stop_timeout` that cost ~22 s per such teardown). With REMAP_SIGTERM=SIGQUIT the
SIGTERM starts the cold shutdown and its soft wait, the first SIGQUIT cancels the active
requests (`during_soft_shutdown`, which keeps sleeping out the window), the second is the hard
shutdown (`on_hard_shutdown`: WorkerTerminate, a SystemExit, so coverage still saves). Without
the remap (a declared deviation) SIGTERM is the warm shutdown and needs one SIGQUIT more.
Source: celery/apps/worker.py, `on_cold_shutdown` and `during_soft_shutdown`.

Each SIGQUIT goes as soon as the worker's log says the step before took effect, not after a
fixed 2 s and 1 s: a proof that reads its last result and stops its worker at once often
stops it before the main process has seen the task end (the result reaches the backend
first), so the worker counts an active request and begins the soft wait; measured, 3 of 4
such stops took 3.6 s instead of 1.2 s (#18)."""

TIMINGS: list[tuple[str, float]] = []
"""(what, seconds) of every worker start and stop in this session (the bench summary reads it)."""


def delete_queues(app: object, *names: str) -> None:
    """Delete the queues a proof used (each is its own; best effort, they may be gone).

    Purged first: on Redis, kombu's `queue_delete` deletes only the queues this process bound
    itself (kombu/transport/virtual/base.py, `Channel.queue_delete` walks `self.state`), and a
    proof's queue is declared by its worker subprocess, so its messages outlived the proof.
    """
    with app.connection_for_write() as conn:
        for queue in names:
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.queue_purge(queue)
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.queue_delete(queue)


def consumed_queues(app: object, hostname: str) -> set[str]:
    """The queues the worker `hostname` says it consumes (`inspect active_queues`)."""
    inspect = app.control.inspect(destination=[hostname], timeout=5)  # type: ignore[attr-defined]
    replies = inspect.active_queues() or {}
    return {queue["name"] for queue in replies.get(hostname, [])}


def queue_length(app: object, name: str) -> int:
    """Messages ready in a queue (not counting those a consumer holds unacknowledged)."""
    from amqp.exceptions import ChannelError

    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=name, passive=True).message_count
        except ChannelError:  # Redis: an emptied queue has no key, so it is "not found"
            return 0


# Beat ---------------------------------------------------------------------------------------

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


@dataclass(repr=False)
class BeatProcess(Process):
    """A real `celery beat` subprocess; reads what it sent out of its DEBUG log."""

    def sends(self, entry: str | None = None) -> list[str]:
        """Entries this beat logged as sent ("Scheduler: Sending due task ..."), in order."""
        found = [m["entry"] for m in SENDING.finditer(self.log())]
        return [e for e in found if entry is None or e == entry]

    def confirmed(self, entry: str | None = None) -> list[Send]:
        return confirmed_sends(self.log(), entry)

    def wait_for(self, predicate: Callable[[BeatProcess], bool], timeout: float = 60) -> None:
        def met() -> bool:
            if predicate(self):
                return True
            self.check_alive()
            return False

        wait_until(met, timeout, what=f"beat {self.name}: {predicate}", context=self)

    def wait_for_sends(self, count: int, entry: str | None = None, timeout: float = 60) -> None:
        self.wait_for(lambda beat: len(beat.sends(entry)) >= count, timeout)


def beat_argv(
    *,
    hostname: str,
    schedule_file: Path,
    max_interval: float = 1,
    loglevel: str = "DEBUG",
    args: Iterable[str] = (),
) -> list[str]:
    """celery-beat.service's ExecStart, with this proof's node name, schedule file, interval,
    log level and extra flags (`deployment.BEAT_HARNESS_DEVIATIONS` says why each)."""
    replaced = {"--schedule": schedule_file, "--loglevel": loglevel}
    argv = []
    for arg in deployment.recommended(deployment.BEAT_UNIT).argv:
        name = arg.partition("=")[0]
        argv.append(f"{name}={replaced.pop(name)}" if name in replaced else arg)
    extra = {"--hostname": hostname, "--max-interval": f"{max_interval:g}", **replaced}
    return [*argv, *(f"{name}={value}" for name, value in extra.items()), *args]


def start_beat(
    log_dir: Path,
    *,
    name: str,
    hostname: str | None = None,
    max_interval: float = 1,
    schedule_file: Path | None = None,
    scheduler: str | None = None,
    loglevel: str = "DEBUG",
    args: Iterable[str] = (),
    env: Mapping[str, str | None] | None = None,
    deviations: Iterable[str] = (),
) -> BeatProcess:
    """Start `celery beat` under the recommended deployment (stopped by the caller, or
    `running_beat`).

    `env` is what the proof changes (None unsets a variable); every difference from
    celery-beat.service and celery.env must be named in `deviations` (the test's `deviation`
    marks), `scheduler` included: the unit runs the settings' scheduler.
    """
    argv = beat_argv(
        hostname=hostname or f"{name}@%h",
        schedule_file=schedule_file or log_dir / f"{name}-schedule",
        max_interval=max_interval,
        loglevel=loglevel,
        args=[*([f"--scheduler={scheduler}"] if scheduler else []), *args],
    )
    asked = {**deployment.recommended(deployment.BEAT_UNIT).env, **(env or {})}
    unit = deployment.BEAT_UNIT
    deployment.check(deployment.differences(argv, asked, unit), deviations, unit)
    return BeatProcess.spawn(
        [*CELERY, *argv], log_path=log_dir / f"{name}.log", env=worker_env(**asked), name=name
    )


@contextlib.contextmanager
def running_beat(log_dir: Path, **options: object) -> Iterator[BeatProcess]:
    """`start_beat` as a context manager: SIGTERM on exit (beat syncs its schedule file)."""
    beat = start_beat(log_dir, **options)
    try:
        yield beat
    finally:
        beat.stop(signal.SIGTERM, timeout=20)
