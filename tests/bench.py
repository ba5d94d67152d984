"""The bench recorder: every ``tests/**/bench_*.py`` adds one row per ratio it measures.

A benchmark measures its variants with ``alternating({...})``: each variant ``BENCH_RUNS``
times (at least 5), in alternating order (A B, B A, A B, ...), so that a drift of the shared
machine's load weighs on every variant alike. A row shows the median of the runs with the
min-to-max spread, and the ratio as the median of the per-round ratios with their spread; the
Runs column says how many rounds and the load average when the benchmark started and ended
(the machine is shared: other jobs run alongside). ``bench_record(BenchRow(...))`` prints the
row as it is measured; the terminal summary prints the table, and with ``BENCH_RESULTS`` set
(``nox -s bench``: docs/assets/data/bench-results.txt, shown on docs/proof.md) writes it there,
keeping the rows of benchmarks this run did not measure. ``BENCH_SCALE`` (default 1) multiplies
every workload: 0.1 for a quick look.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version

import pytest

from tests.results import report

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
RUNS = max(5, int(os.environ.get("BENCH_RUNS", "5")))
ROWS: list[BenchRow] = []
LOAD_AT_START = os.getloadavg()[0]  # at collection, before the first benchmark
# A run rewrites only the rows it measures, so each row says when and on what it was measured.
MEASURED = (
    f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
    f"Django {version('django')}"
)
HEADER = (
    "| Benchmark | Baseline | Pattern | Workload | Baseline result | Pattern result | Ratio "
    "| Runs |\n|---|---|---|---|---:|---:|---:|---|"
)


def scaled(size: int) -> int:
    """A workload size times BENCH_SCALE (at least 1)."""
    return max(1, round(size * SCALE))


@dataclass(frozen=True)
class Spread:
    """The values of one variant over the runs: shown as median (min to max)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def show(self, unit: str = "s", digits: int = 1) -> str:
        low, mid, high = min(self.values), self.median, max(self.values)
        sep = "" if unit == "×" else " "  # noqa: RUF001
        return f"{mid:,.{digits}f}{sep}{unit} ({low:,.{digits}f}–{high:,.{digits}f})"  # noqa: RUF001


def alternating(variants: dict[str, Callable[[], float]], runs: int = RUNS) -> dict[str, Spread]:
    """Run every variant `runs` times, the order reversed every other round; the values each
    call returned, by variant."""
    names = list(variants)
    values: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(runs):
        for name in names if round_ % 2 == 0 else reversed(names):
            values[name].append(variants[name]())
    return {name: Spread(tuple(v)) for name, v in values.items()}


def ratios(numerator: Spread, denominator: Spread) -> Spread:
    """The ratio of two variants round by round (the same round ran under the same load)."""
    return Spread(tuple(a / b for a, b in zip(numerator.values, denominator.values, strict=True)))


@dataclass
class BenchRow:
    """One ratio, both sides measured in the same run. `ratio` is how many times better the
    pattern does (baseline time / pattern time, or pattern rate / baseline rate), per round."""

    benchmark: str
    baseline: str
    pattern: str
    workload: str
    baseline_result: str
    pattern_result: str
    ratio: Spread
    runs: str = ""

    def markdown(self) -> str:
        return (
            f"| {self.benchmark} | {self.baseline} | {self.pattern} | {self.workload} "
            f"| {self.baseline_result} | {self.pattern_result} | {self.ratio.show('×')} "  # noqa: RUF001
            f"| {self.runs} |"
        )


@pytest.fixture
def bench_record():
    load_at_start = os.getloadavg()[0]

    def add(row: BenchRow) -> BenchRow:
        load = f"load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        row.runs = f"{len(row.ratio.values)} alternating, {MEASURED}; {load}"
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
        note=(
            f"The machine is shared with other engineers' jobs: load average {LOAD_AT_START:.1f} "
            "when this run started, and per row in the Runs column. A run rewrites the rows it "
            "measures and keeps the others: the Runs column says when, and on which Python and "
            "Django, each row was measured."
        ),
    )
