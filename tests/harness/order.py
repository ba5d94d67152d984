"""Longest module first: the order pytest-xdist hands modules to its processes (.ci/run).

``--dist loadfile`` keeps a module in one process (its shared workers start once) and by
default queues modules by their number of tests. A module of two 30 s proofs then comes last
and one process runs it while the others sit idle: the run's tail. Queued by their measured
wall time instead (longest processing time first, the classic bound for this scheduling
problem), the short modules fill the end. The times are ``durations.json`` beside this file,
rewritten by any run with ``SNIPPETS_DURATIONS_OUT=<path>`` (controller only); a module it does
not know yet counts as the median, and the file only orders the queue: a stale entry costs
time, never a test.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.harness import forkserver

DURATIONS = Path(__file__).with_name("durations.json")


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def known_durations(path: Path = DURATIONS) -> dict[str, float]:
    """Module path -> seconds of wall time in its process, as last measured."""
    return json.loads(path.read_text()) if path.exists() else {}


SHARED_SCOPES = ("tests/site/",)
"""Directories whose modules share a session fixture worth building once: the modules of
tests/site/ all read the site that its conftest builds (a strict `mkdocs build`, ~20 s of CPU).
Split over three processes, the Redis run built it three times; one scope, one process, once."""


def scope_of(module: str) -> str:
    """The unit xdist hands to one process: the module, or the shared directory it is in."""
    return next((shared for shared in SHARED_SCOPES if module.startswith(shared)), module)


def scope_durations(durations: dict[str, float]) -> dict[str, float]:
    """Seconds per scope: a shared scope takes the sum of its modules'."""
    summed: dict[str, float] = defaultdict(float)
    for module, seconds in durations.items():
        summed[scope_of(module)] += seconds
    return dict(summed)


def longest_first(modules: list[str], durations: dict[str, float]) -> list[str]:
    """`modules` by measured duration, longest first; unknown ones count as the median.

    Ties keep collection order (the sort is stable).
    """
    default = statistics.median(durations.values()) if durations else 0.0
    return sorted(modules, key=lambda module: -durations.get(module, default))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadFileScheduling

    if config.getoption("dist") != "loadfile":
        return None

    class LongestModuleFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(module_of(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            # The first call comes from schedule(), once the queue holds every module.
            if not getattr(self, "_ordered", False):
                self._ordered = True
                order = longest_first(list(self.workqueue), scope_durations(known_durations()))
                for scope in order:
                    self.workqueue.move_to_end(scope)
            super()._assign_work_unit(node)

    return LongestModuleFirst(config, log)


CPU = "cpu"  # the user property a test's teardown report carries: (own, subprocesses) CPU s


def cpu_now() -> tuple[float, float]:
    """CPU seconds used so far by this process, and by the subprocesses it has reaped."""
    own, reaped = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    forked = forkserver.CPU_REAPED[0]  # reaped by a fork server, not by this process
    return own.ru_utime + own.ru_stime, reaped.ru_utime + reaped.ru_stime + forked


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Time a test's CPU (setup, call, teardown; a module's shared workers count in the
    teardown of its last test, where they are stopped and reaped)."""
    item.stash[_started] = cpu_now()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if call.when == "teardown" and _started in item.stash:
        before, after = item.stash[_started], cpu_now()
        report.user_properties.append((CPU, (after[0] - before[0], after[1] - before[1])))
    return report


_started = pytest.StashKey[tuple[float, float]]()


class DurationRecorder:
    """On the controller: wall time per module (setup + call + teardown of its tests), and
    its CPU time, in the test process and in the subprocesses it started (workers and their
    pool children, beat, `celery` commands, private servers): the profile of #18."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.started = time.monotonic()
        self.last: dict[str, float] = {}  # test process -> when its last report arrived

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module = module_of(report.nodeid)
        self.seconds[module] += report.duration
        if (node := getattr(report, "node", None)) is not None:  # from an xdist process
            self.last[node.gateway.id] = time.monotonic() - self.started
        for name, value in report.user_properties:
            if name == CPU:
                self.cpu[module][0] += value[0]
                self.cpu[module][1] += value[1]

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        merged = {**known_durations(self.out), **{k: round(v, 1) for k, v in self.seconds.items()}}
        self.out.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """The modules that cost the most CPU (2 cores: CPU, not waiting, bounds CI's pace)."""
        if not self.cpu:
            return
        total = [sum(c[i] for c in self.cpu.values()) for i in (0, 1)]
        terminalreporter.write_line(
            f"harness: CPU by module: {total[0]:.0f} s in tests, {total[1]:.0f} s in their "
            f"subprocesses, {sum(self.seconds.values()):.0f} s of tests' wall time; top {TOP}:"
        )
        ranked = sorted(self.cpu.items(), key=lambda kv: -sum(kv[1]))[:TOP]
        for module, (own, sub) in ranked:
            terminalreporter.write_line(
                f"harness:   {own + sub:6.1f} s CPU ({own:5.1f} + {sub:6.1f}) "
                f"{self.seconds[module]:6.1f} s wall  {module}"
            )
        if self.last:  # how long each process sat idle while the last one finished
            ends = ", ".join(f"{gw} {end:.0f} s" for gw, end in sorted(self.last.items()))
            terminalreporter.write_line(f"harness: each process's last test ended at: {ends}")


TOP = 30


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get("SNIPPETS_DURATIONS_OUT")
    if out and not hasattr(config, "workerinput"):
        config.pluginmanager.register(DurationRecorder(Path(out)), "snippets-durations")
