"""The bench recorder: every ``tests/**/bench_*.py`` adds one row per ratio it measures.

``bench_record(BenchRow(...))`` prints the row as it is measured; the terminal summary prints
the table, and with ``BENCH_RESULTS`` set (``nox -s bench``: docs/assets/data/bench-results.txt,
shown on docs/proof.md) writes it there, keeping the rows of benchmarks this run did not
measure. ``BENCH_SCALE`` (default 1) multiplies every workload: 0.1 for a quick look.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.results import report

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROWS: list[BenchRow] = []
HEADER = (
    "| Benchmark | Baseline | Pattern | Workload | Baseline result | Pattern result | Ratio |\n"
    "|---|---|---|---|---:|---:|---:|"
)


def scaled(size: int) -> int:
    """A workload size times BENCH_SCALE (at least 1)."""
    return max(1, round(size * SCALE))


@dataclass
class BenchRow:
    """One ratio, both sides measured in the same run. `ratio` is how many times better the
    pattern does (baseline time / pattern time, or pattern rate / baseline rate)."""

    benchmark: str
    baseline: str
    pattern: str
    workload: str
    baseline_result: str
    pattern_result: str
    ratio: float

    def markdown(self) -> str:
        return (
            f"| {self.benchmark} | {self.baseline} | {self.pattern} | {self.workload} "
            f"| {self.baseline_result} | {self.pattern_result} | {self.ratio:.1f}× |"  # noqa: RUF001
        )


@pytest.fixture
def bench_record():
    def add(row: BenchRow) -> BenchRow:
        ROWS.append(row)
        print(f"\nBENCH {row.markdown()}")
        return row

    return add


def pytest_terminal_summary(terminalreporter) -> None:
    measured = tuple(f"| {row.benchmark} |" for row in ROWS)
    report(
        terminalreporter,
        "bench figures",
        HEADER,
        [row.markdown() for row in ROWS],
        os.environ.get("BENCH_RESULTS"),
        lambda line: not line.startswith(measured),
    )
