"""Helpers of the monitoring proofs: the tools' environment, and polling HTTP endpoints."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.celery import worker_env
from tests.harness.process import ROOT, Process
from tests.harness.wait import wait_until

FLOWER_SH = ROOT / "snippets/monitoring/flower.sh"
AUTH = ("ops", "s3cret-for-tests")

poll = partial(wait_until, interval=0.25, ignore=(requests.RequestException, AssertionError))
"""`wait_until` for HTTP checks: a refused connection or a failed assert means "not yet"."""


def tool_env(covered: bool = False, **extra: str | None) -> dict[str, str]:
    """worker_env() with this interpreter's bin directory first, so `celery` is the venv's.

    Tools that run none of our snippets' code (Flower, `celery inspect`) start without coverage:
    measuring them only slows every run.
    """
    env = worker_env(**extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if not covered:
        env.pop("COVERAGE_PROCESS_CONFIG", None)
        env.pop("COVERAGE_PROCESS_START", None)
    return env


class HttpProcess(Process):
    """A process serving HTTP (Flower, the exporter) at `url`."""

    url: str = ""


class ExporterProcess(HttpProcess):
    """The page's Prometheus exporter."""

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, metric: str, **labels: str) -> float:
        return self.scrape().get((metric, tuple(sorted(labels.items()))), 0.0)
