"""Chaos runs: real faults at load, one figure row per scenario.

CHAOS_TASKS sets the load (default 40: the small version that runs with every test run and
in .ci/run); `nox -s chaos` runs 1,000 and writes the table to CHAOS_RESULTS, the file
docs/proof.md includes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

TASKS = int(os.environ.get("CHAOS_TASKS", "40"))
ROWS: list[Row] = []


@dataclass
class Row:
    scenario: str
    variant: str
    broker: str
    sent: int
    effects: int
    duplicates: int
    lost: int
    seconds: float
    expected: str

    def markdown(self) -> str:
        return (
            f"| {self.scenario} | {self.variant} | {self.broker} | {self.sent} | {self.effects} "
            f"| {self.duplicates} | {self.lost} | {self.seconds:.1f} | {self.expected} |"
        )


HEADER = (
    "| Scenario | Variant | Broker | Sent | Effects | Duplicates | Lost | Wall (s) | Expected |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---|"
)


def broker_name() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_URL.split(":", 1)[0].replace("amqp", "rabbitmq")


class Clock:
    def __enter__(self) -> Clock:
        self.start = time.monotonic()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.monotonic() - self.start


SCENARIOS = [  # the order of docs/proof.md
    "SIGKILL pool children",
    "Broker restarted mid-run",
    "PostgreSQL connections terminated",
    "SIGTERM during long tasks",
]


def table_order(line: str) -> tuple:
    """Broker, then the page's scenario order, then the pattern before its anti-patterns."""
    scenario, variant, broker = (cell.strip() for cell in line.split("|")[1:4])
    known = scenario in SCENARIOS
    return broker, SCENARIOS.index(scenario) if known else len(SCENARIOS), "anti-pattern" in variant
