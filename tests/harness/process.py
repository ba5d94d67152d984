"""One process type: every subprocess a proof starts, in its own session, logging to a file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil

from tests.harness import forkserver
from tests.harness.wait import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent.parent


def fresh_python(
    code: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`code` run by a new interpreter at the repository's root, with exactly `env`: an import
    as gunicorn or the `celery` command does it, without this test process's settings, app
    registry or loggers. Its output and exit status are the caller's to check."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Process:
    """A started subprocess: its own session (so its whole group can be stopped) and log file."""

    proc: subprocess.Popen | forkserver.Forked
    log_path: Path
    name: str = ""

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        name: str = "",
        **fields: object,
    ) -> Process:
        """Start `argv` (cwd: the repository) with stdout and stderr going to `log_path`."""
        with log_path.open("wb") as log:
            proc = forkserver.popen(  # the only Popen under tests/ (tests/test_harness.py)
                argv,
                cwd=ROOT,
                env=env,
                stdout=log.fileno(),
                start_new_session=True,
                log_dir=log_path.parent,
            )
        return cls(proc, log_path, name or Path(argv[0]).name, **fields)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, pid {self.proc.pid}, {self.log_path})"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        """Raise at once when the process has exited: a wait on it could never succeed."""
        if self.proc.poll() is not None:
            status = self.proc.returncode
            raise RuntimeError(f"{self!r} exited with {status}:\n{self.log()[-4000:]}")

    def wait_for_log(self, text: str, timeout: float = 60) -> str:
        """Wait until `text` appears in the log; return the log. Fails early if it exits."""

        def found() -> str | None:
            if text in (log := self.log()):
                return log
            self.check_alive()
            return None

        return wait_until(found, timeout, what=f"{text!r} in the log", context=self)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def group(self) -> list[psutil.Process]:
        """Every live process of the session's process group (orphans included)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.proc.pid and proc.status() != "zombie":
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def stop(
        self,
        sig: int = signal.SIGTERM,
        timeout: float = 30,
        *,
        group: bool = False,
        escalate: Sequence[tuple[float, int] | tuple[float, int, str]] = (),
    ) -> int:
        """Send `sig`, wait up to `timeout`, SIGKILL the group, sweep orphans; the exit status.

        `sig` goes to the main process (what systemd's KillMode=mixed and `docker stop` do), or
        to the whole group with `group=True` (a shell and what it started). `escalate` is a
        list of (seconds, signal[, text]): while the process lives, wait that long, or until
        its log shows `text` (written after the stop began), then send that signal (a
        teardown's "hit Ctrl+C again": see `tests.harness.celery.TEARDOWN`).
        """
        if self.proc.poll() is None:
            send = partial(os.killpg, self.proc.pid) if group else self.proc.send_signal
            seen = len(self.log())  # a step's text counts only once the stop has begun
            with contextlib.suppress(ProcessLookupError):
                send(sig)
            for delay, then, *text in escalate:
                with contextlib.suppress(WaitTimeout):
                    wait_until(partial(self._moved_on, seen, *text), delay, interval=0.05)
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    send(then)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:  # hung: say where, then the SIGKILL below
                name = signal.Signals(sig).name
                print(f"harness: {self!r} still runs {timeout} s after {name}; its group:",
                      self.state(), sep="\n", file=sys.stderr)  # fmt: skip
            else:
                psutil.wait_procs(self.group(), timeout=timeout)  # orphans finishing their exit
        self.kill()
        return self.proc.returncode

    def _moved_on(self, seen: int, text: str | None = None) -> bool:
        """The process exited, or its log shows `text` after its first `seen` characters."""
        exited = self.proc.poll() is not None
        return exited or (text is not None and text in self.log()[seen:])

    def state(self) -> str:
        """What each live process of the group is doing: state, kernel wait channel, CPU so far
        and command line. Printed when a stop or a wait runs out, so that a hang in CI says
        where the process was (#18: workers that stopped answering, not understood yet)."""
        lines = []
        for proc in self.group():
            try:
                with proc.oneshot():
                    cpu = sum(proc.cpu_times()[:2])
                    what = f"{proc.status()} ppid {proc.ppid()} cpu {cpu:.2f} s"
                    command = " ".join(proc.cmdline())[:160]
                wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
            except (psutil.Error, OSError):
                continue
            lines.append(f"  {proc.pid} {what} wchan {wchan or '-'}: {command}")
        return "\n".join(lines)

    def kill(self) -> None:
        """SIGKILL the whole group at once (pull the plug), and reap the main process."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for proc in self.group():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
