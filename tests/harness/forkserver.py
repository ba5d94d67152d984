"""`celery worker` and `celery beat` forked from an interpreter that has imported Celery already.

Every proof starts its workers as new processes, and on a 2-core CI machine a third or more of
a worker's CPU is the interpreter importing Celery, its command plugins, kombu and Django, the
same modules every time (#18's profile). A fork server pays that once per test process: it imports
them, then forks a child per launch; the child takes the launch's argv, environment, working
directory and file descriptors and runs `python -m <module>` exactly as a new interpreter would
(`runpy`, as `-m` does), settings, project, app and worker all loaded fresh in the child.

It is a declared deviation (tests/harness/deployment.py, `HARNESS_DEVIATIONS["celery"]`), and
one that cannot change what a proof sees, because a launch is forked only when:

- its environment agrees with the server's on every variable the imports read (the server
  records each read of `os.environ` while importing), on those Python reads before any code
  runs (PYTHON*, locale, TZ), and its working directory is the server's;
- its command is `worker` or `beat` and names neither gevent nor eventlet: those must patch the
  standard library before anything imports it;
- the server imported nothing that reads Django's settings (it checks, and refuses to serve).

Otherwise the launch is an ordinary `subprocess.Popen`. `SNIPPETS_FORK_SERVER=0` turns it off.
The differences that remain are those of any forked process: its /proc cmdline is the server's,
its parent is the server (its exit status and CPU reach the test over the server's socket),
it shares the server's hash seed (Python reseeds `random` after a fork), `inspect.getmodule`'s
cache of module files holds the server's modules already, `zoneinfo.ZoneInfo` finds every time
zone loaded already (the same files, read by the server), and the objects it inherits from the
server's imports are frozen out of the garbage collector's sight (`gc.freeze()`: what a module
makes lives as long as the module).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import zoneinfo
from collections.abc import Mapping, Sequence
from pathlib import Path

COMMAND_IMPORTS = (
    "celery.bin.celery",  # the `celery` command and its plugins (Flower's, click_repl)
    "celery.apps.worker",
    "celery.apps.beat",
    "celery.worker.consumer",
    "celery.concurrency.prefork",
    "kombu.transport.redis",
    "kombu.transport.pyamqp",
    "coverage",  # tests/covered_celery.py imports it first
)
PROJECT_IMPORTS = (
    "django.db.models",
    "django.db.backends.postgresql.base",
    "psycopg",
    "requests",
    "sqlparse",
    "django.core.management",
    "django.core.checks",
    "django.template",
    "django.forms",
    "django.http",
    "django.urls",
    "django.db.migrations",
    "django.core.serializers",
    "django.contrib.auth",
    "django.views.generic",
    "django.core.mail",
    "celery.fixups.django",
    "cron_descriptor",
    "dj_database_url",
)
"""Modules the project's setup imports (`django.setup()` and the task modules: tests/
test_harness.py checks each), none of which reads a setting when imported."""
PREIMPORT = COMMAND_IMPORTS + PROJECT_IMPORTS
"""What the server imports: what every worker and beat imports anyway, before or while it
reads its settings. Nothing here may read Django's settings or start a thread (the server
checks both before it serves)."""

SUBCOMMANDS = frozenset({"worker", "beat"})
UNFORKABLE_POOLS = ("gevent", "eventlet")  # named anywhere in the command: never forked
STARTUP_VARIABLES = ("LANG", "LANGUAGE", "TZ")  # read by the interpreter or libc, not os.environ
STARTUP_PREFIXES = ("PYTHON", "LC_")
COVERAGE_STARTUP = ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")
START_TIMEOUT = 120  # seconds for a server's imports, or a fork, on a loaded machine
MAX_SERVERS = 3  # per test process: one per distinct environment the imports read
LAUNCHES = {"forked": 0, "new": 0}
"""Worker and beat launches this process forked, and those it could not (a new interpreter)."""
CPU_REAPED: list[float] = [0.0]
"""CPU seconds of the forked children that have exited: the server reaps them, so they are not
in this process's RUSAGE_CHILDREN (tests/harness/order.py and tests/conftest.py add this)."""


def enabled() -> bool:
    return os.environ.get("SNIPPETS_FORK_SERVER", "1") != "0"


def module_and_args(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """(module, args) of `python -m module args` run by this interpreter, else None."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m":
        return argv[2], list(argv[3:])
    return None


def forkable(argv: Sequence[str]) -> bool:
    parsed = module_and_args(argv)
    if parsed is None or parsed[0] != "tests.covered_celery":
        return False
    args = parsed[1]
    joined = " ".join(args)
    return bool(SUBCOMMANDS & set(args)) and not any(p in joined for p in UNFORKABLE_POOLS)


def startup_key(env: Mapping[str, str], cwd: str) -> tuple:
    """What the interpreter itself takes from the environment before running any code."""
    fixed = sorted(
        (k, v) for k, v in env.items() if k.startswith(STARTUP_PREFIXES) or k in STARTUP_VARIABLES
    )
    return (cwd, tuple(fixed))


# The client: in the test process ------------------------------------------------------------


class Forked:
    """The part of `subprocess.Popen` the harness uses, for a child of the fork server."""

    def __init__(self, server: Server, pid: int, args: list[str]) -> None:
        self.server, self.pid, self.args = server, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # as Popen: never signal a pid that may have been reused
            os.kill(self.pid, sig)


class Server:
    """One fork server (a subprocess) and the socket to it; a thread reads its replies."""

    def __init__(self, env: Mapping[str, str], cwd: str, log_path: Path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server_env = {k: v for k, v in env.items() if k not in COVERAGE_STARTUP}
        self.startup = startup_key(env, cwd)
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                cwd=cwd,
                env=server_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.changed = threading.Condition()
        self.replies: dict[int, dict] = {}
        self.exits: dict[int, int] = {}
        self.next_id = 0
        self.reaped_cpu = 0.0  # CPU seconds of this server's children that have exited
        self.sock.settimeout(START_TIMEOUT)  # an import that hangs: no server, not a hang
        try:
            ready = json.loads(self.sock.recv(1 << 20) or b"{}")
        except TimeoutError:
            ready = {}
        self.sock.settimeout(None)
        if "read" not in ready:
            self.close()
            raise RuntimeError(f"fork server refused to serve: {ready or log_path.read_text()}")
        self.read: dict[str, str | None] = ready["read"]
        threading.Thread(target=self._listen, name="forkserver", daemon=True).start()

    def serves(self, env: Mapping[str, str], cwd: str) -> bool:
        return startup_key(env, cwd) == self.startup and all(
            env.get(k) == v for k, v in self.read.items() if not k.startswith("*")
        )

    def _listen(self) -> None:
        while message := self.sock.recv(1 << 16):
            reply = json.loads(message)
            with self.changed:
                if "exit" in reply:
                    self.exits[reply["pid"]] = reply["exit"]
                    CPU_REAPED[0] += reply["cpu"]
                    self.reaped_cpu += reply["cpu"]
                else:
                    self.replies[reply["id"]] = reply
                self.changed.notify_all()
        with self.changed:
            self.replies[-1] = {"error": "fork server gone"}
            self.changed.notify_all()

    def launch(
        self, argv: Sequence[str], *, env: Mapping[str, str], fds: Sequence[int], new_session: bool
    ) -> Forked:
        module, args = module_and_args(argv)  # type: ignore[misc]
        with self.lock:
            self.next_id += 1
            request = {"id": self.next_id, "module": module, "args": args, "env": dict(env)}
            request["session"] = new_session
            socket.send_fds(self.sock, [json.dumps(request).encode()], list(fds))
        with self.changed:
            self.changed.wait_for(
                lambda: request["id"] in self.replies or -1 in self.replies, START_TIMEOUT
            )
            reply = self.replies.pop(request["id"], None) or self.replies.get(-1, {})
        if "pid" not in reply:
            raise RuntimeError(f"fork server: {reply} ({self.log_path})")
        return Forked(self, reply["pid"], list(argv))

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: pid in self.exits or -1 in self.replies, timeout)
            return self.exits.get(pid)

    def close(self) -> None:
        # shutdown() first: close() alone leaves the socket open while the _listen thread
        # waits in recv() on it (Linux keeps it for the call), so the server never read its
        # end, and each close waited out the 10 s below (#18: 25-31 s after each test
        # process's last test, its servers closed one after another).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
            # Reaped: the server's RUSAGE_CHILDREN, its children's CPU, is in this process's
            # now; counted once (tests/harness/order.py, `cpu_now`).
            CPU_REAPED[0] -= self.reaped_cpu


_servers: list[Server] = []
_servers_lock = threading.Lock()
_refused: set[tuple] = set()


def popen(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    stdout: int,
    start_new_session: bool,
    log_dir: Path,
) -> subprocess.Popen | Forked:
    """`subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=STDOUT, ...)`, forked
    from a fork server when the launch qualifies (the module docstring)."""
    full_env = dict(os.environ if env is None else env)
    if enabled() and forkable(argv):
        server = _server_for(full_env, str(cwd), log_dir)
        LAUNCHES["forked" if server else "new"] += 1
        if server is not None:
            return server.launch(
                argv, env=full_env, fds=[0, stdout, stdout], new_session=start_new_session
            )
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=start_new_session,
    )


def _server_for(env: dict[str, str], cwd: str, log_dir: Path) -> Server | None:
    with _servers_lock:
        for server in _servers:
            if server.serves(env, cwd):
                return server
        key = startup_key(env, cwd)
        if len(_servers) >= MAX_SERVERS or key in _refused:
            return None
        try:
            server = Server(env, cwd, log_dir / f"forkserver-{os.getpid()}-{len(_servers)}.log")
        except (OSError, RuntimeError, ValueError):
            _refused.add(key)
            return None
        _servers.append(server)
        return server if server.serves(env, cwd) else None


def close_all() -> None:
    """End the servers (their running children live on, as Popen's would)."""
    with _servers_lock:
        while _servers:
            _servers.pop().close()


# The server: `python -m tests.harness.forkserver FD` ----------------------------------------

READ: dict[str, str | None] = {}


def _refresh_wsgiref() -> None:
    import wsgiref.handlers

    wsgiref.handlers.BaseHandler.os_environ = wsgiref.handlers.read_environ()


SNAPSHOTS = {"wsgiref.handlers": _refresh_wsgiref}
"""Modules that copy the whole environment when imported (prometheus_client, through Flower's
plugin, imports wsgiref's server), and how a forked child takes its own copy instead."""


def _reader() -> str:
    """The module that is reading the environment (past os's and collections.abc's frames)."""
    frame = sys._getframe(2)  # past Tracking's method
    while frame.f_back and frame.f_globals.get("__name__") in (
        "_collections_abc",
        "collections.abc",
        "os",
        __name__,
    ):
        frame = frame.f_back
    return str(frame.f_globals.get("__name__"))


def _track_environ() -> type:
    """Record every variable the imports look up; a module that reads the whole environment
    is recorded as "*module" (served only if `SNAPSHOTS` can redo its copy in the child)."""
    original = type(os.environ)

    class Tracking(original):  # type: ignore[misc, valid-type]
        def __getitem__(self, key: str) -> str:
            try:
                value = super().__getitem__(key)
            except KeyError:
                value = None
                raise
            finally:
                if _reader() not in SNAPSHOTS:  # its copy is redone in each child
                    READ.setdefault(key, value)
            return value

        def __contains__(self, key: object) -> bool:
            try:
                self[key]  # type: ignore[index]
            except KeyError:
                return False
            return True

        def __iter__(self):
            READ[f"*{_reader()}"] = "*"
            return super().__iter__()

    os.environ.__class__ = Tracking
    return original


def _preimport() -> str | None:
    """Import PREIMPORT with reads recorded; the reason not to serve, or None."""
    import importlib

    original = _track_environ()
    try:
        for name in PREIMPORT:
            importlib.import_module(name)
    finally:
        os.environ.__class__ = original
    from django.conf import settings

    if whole := [k[1:] for k in READ if k.startswith("*") and k[1:] not in SNAPSHOTS]:
        return f"an import read the whole environment: {whole}"
    if settings.configured:
        return "an import read Django's settings"
    if threading.active_count() != 1:
        return f"an import started a thread: {threading.enumerate()}"
    return None


def _serve(sock: socket.socket) -> tuple[dict, list[int]]:
    """Fork a child per request and report each child's exit; return (request, fds) in a child."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 8)
                if not message:
                    sys.exit(0)  # the test process is gone
                request = json.loads(message)
                request["snapshots"] = [k[1:] for k in READ if k.startswith("*")]
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    sock.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                sel.register(os.pidfd_open(pid), selectors.EVENT_READ, pid)
                sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status, usage = os.wait4(key.data, 0)
                cpu = usage.ru_utime + usage.ru_stime
                exit_code = os.waitstatus_to_exitcode(status)
                sock.send(json.dumps({"pid": key.data, "exit": exit_code, "cpu": cpu}).encode())


def _become(request: dict, fds: list[int]) -> None:
    """In the forked child: take the launch's session, descriptors and environment, then run
    its module as `python -m` runs it (a fresh `__main__`, argv[0] the module's file)."""
    import runpy
    import types

    if request["session"]:
        os.setsid()
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.clear()
    os.environ.update(request["env"])
    for name in request["snapshots"]:
        SNAPSHOTS[name]()
    if any(k in request["env"] for k in COVERAGE_STARTUP):
        import coverage

        coverage.process_startup()  # what coverage's .pth does at a new interpreter's start
    sys.argv = ["-m", *request["args"]]
    sys.modules["__main__"] = types.ModuleType("__main__")
    runpy._run_module_as_main(request["module"])  # what `python -m` calls


ZONES: list[zoneinfo.ZoneInfo] = []  # the server's time zones, alive in every child (main())


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    if reason := _preimport():
        sock.send(json.dumps({"refused": reason}).encode())
        sys.exit(1)
    # inspect.getmodule's map of the imported modules' files, built once here: coverage builds it
    # at each start in a measured child (Collector.__init__ -> debug.short_stack() looks up every
    # frame's module), each time through the ~1,400 modules the server imported. Measured (#18):
    # process_startup() in a child 0.12 -> 0.02 CPU-s. Only a cache: getmodule checks each
    # module's file against it.
    inspect.getmodule(inspect.currentframe())
    # Every time zone, loaded once here: django-celery-beat's CrontabSchedule has a
    # TimeZoneField, whose __init__ makes a ZoneInfo of each of the ~600 zones (timezone_field/
    # fields.py, `default_tzs`), each read from its tzdata file, in every process that sets Django
    # up. ZoneInfo(key) returns the instance it made before while one is alive (the zoneinfo
    # docs: "a cache ... by key"): held here, each child finds them. A profile of a worker's
    # start (#18): 0.13 of its 0.75 s in that one field. (Not timezone_field's module: it reads
    # the settings when imported.)
    for key in sorted(zoneinfo.available_timezones()):
        with contextlib.suppress(ValueError, OSError):  # a file that is no zone: left to the child
            ZONES.append(zoneinfo.ZoneInfo(key))
    # What the imports made (modules, classes, functions) lives as long as the child does. Out
    # of the collector's sight, every collection in a child (Celery's before each pool process
    # it forks, the automatic ones) stops walking, and writing to, those ~110,000 objects, which
    # stay shared instead of copied (`gc.freeze`'s documented use: "If a process will fork()
    # without exec() ..."); the price, an inherited object a child drops inside a reference
    # cycle is never freed, is at most what the imports made. Measured
    # (#18): Celery's gc.collect() before each pool process 0.14 -> 0.01 CPU-s; the workers of
    # tests/production/test_scaling.py and test_health_checks.py 32 -> 26 CPU-s.
    gc.collect()
    gc.freeze()
    sock.send(json.dumps({"read": READ}).encode())
    request, fds = _serve(sock)
    _become(request, fds)


if __name__ == "__main__":
    main()
