"""Fixtures of the chaos runs: the row recorder and the table it writes (rows: helpers.py).

CHAOS_TASKS sets the load (default 40: the small version that runs with every test run and
in .ci/run); `nox -s chaos` runs 1,000 and writes the table to CHAOS_RESULTS, the file
docs/proof.md includes.
"""

from __future__ import annotations

import os

import pytest

from tests.proof.helpers import HEADER, ROWS, Row, table_order
from tests.results import report


@pytest.fixture
def record():
    def add(row: Row) -> Row:
        ROWS.append(row)
        print(f"\nCHAOS {row.markdown()}")
        return row

    return add


def pytest_terminal_summary(terminalreporter) -> None:
    rows = [row.markdown() for row in ROWS]
    measured = tuple(f"| {row.scenario} | {row.variant} | {row.broker} |" for row in ROWS)
    report(
        terminalreporter,
        "chaos figures",
        HEADER,
        rows,
        os.environ.get("CHAOS_RESULTS"),
        lambda line: not line.startswith(measured),
        order=table_order,
    )
