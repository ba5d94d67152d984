"""Kill-first ordering for the mutation runner (tests/mutants.py), loaded with
``-p tests.mutants_order``: the tests that killed the page's earlier mutants run first.

A mutant is killed by the first failing test of a ``-x`` run, and the mutants of one page are
mostly caught by the same few tests (neighbouring mutants sit in the same function), so the
killer of the last mutant, run first, usually ends the next run after one test instead of half
the module (mutmut orders its tests the same way). Only the order changes: every collected test
still runs until one fails, so a mutant no test kills still runs the whole module.

* ``SNIPPETS_MUTANTS_FIRST``: node ids, one per line, to run first, in that order; the other
  tests keep pytest's order after them. Ids that name no collected test are ignored.
* ``SNIPPETS_MUTANTS_FAILED``: a file to write the first failure to (``FAILED <node id>`` for a
  test, ``ERROR <node id>`` for a setup/teardown or collection error), the killer to move first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import pytest

FIRST = "SNIPPETS_MUTANTS_FIRST"
FAILED = "SNIPPETS_MUTANTS_FAILED"

Item = TypeVar("Item")


def kill_first(items: Sequence[Item], first: Sequence[str]) -> list[Item]:
    """`items` with those whose node id is in `first` moved to the front in `first`'s order;
    the rest keep their relative order (the sort is stable)."""
    rank = {nodeid: i for i, nodeid in reversed(list(enumerate(first)))}
    return sorted(items, key=lambda item: rank.get(item.nodeid, len(first)))


@pytest.hookimpl(trylast=True)  # after pytest-django's and the fixtures' own reordering
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if first := [n for n in os.environ.get(FIRST, "").splitlines() if n.strip()]:
        items[:] = kill_first(items, first)


def record(kind: str, nodeid: str) -> None:
    out = os.environ.get(FAILED)
    if out and not Path(out).exists():  # the first failure only
        Path(out).write_text(f"{kind} {nodeid}\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        record("FAILED" if report.when == "call" else "ERROR", report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        record("ERROR", report.nodeid)
