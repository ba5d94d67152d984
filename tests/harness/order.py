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
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

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


class DurationRecorder:
    """On the controller: wall time per module (setup + call + teardown of its tests)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seconds: dict[str, float] = defaultdict(float)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[module_of(report.nodeid)] += report.duration

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        merged = {**known_durations(self.out), **{k: round(v, 1) for k, v in self.seconds.items()}}
        self.out.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get("SNIPPETS_DURATIONS_OUT")
    if out and not hasattr(config, "workerinput"):
        config.pluginmanager.register(DurationRecorder(Path(out)), "snippets-durations")
