"""Benchmark for docs/configuration/worker-settings.md (not a timed test: run it on purpose).

The scenario of the prefetch proofs (``short_behind_long``): worker A runs a 5-second task, a
short task is published, then an idle worker B joins the queue. The short task's wait, from
publish to start, at Celery's defaults (early ack, multiplier 4) and at the project's settings
(acks_late, multiplier 1), alternating in one run (tests/bench.py).

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... CELERY_RESULT_BACKEND=redis://... \\
      .venv/bin/pytest tests/configuration/bench_prefetch.py -p no:cov -s
"""

from __future__ import annotations

from datetime import datetime

import pytest
from celery.signals import before_task_publish
from django.utils import timezone

from tests.bench import BenchRow, alternating, ratios
from tests.configuration.helpers import CELERY_DEFAULTS, PROJECT, short_behind_long

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("postgres", "broker")]


def short_task_wait(worker_process, celery_app, overrides: dict, *, prefetched: bool) -> float:
    """Seconds from publishing the short task to its start, in the short-behind-long scenario."""
    published: dict[str, datetime] = {}

    def stamp(headers=None, **_kw) -> None:
        published[headers["id"]] = timezone.now()

    before_task_publish.connect(stamp, weak=False)
    try:
        _long, short_run, _a, _b = short_behind_long(
            worker_process, celery_app, overrides, prefetched=prefetched
        )
    finally:
        before_task_publish.disconnect(stamp)
    return (short_run.started_at - published[short_run.task_id]).total_seconds()


@pytest.mark.timeout(3600)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(defaults vs the page's settings)",
    reason="the benchmark compares the two settings",
)
def test_bench_short_task_wait_by_prefetch_setting(worker_process, celery_app, bench_record):
    t = alternating(
        {
            "defaults": lambda: short_task_wait(
                worker_process, celery_app, CELERY_DEFAULTS, prefetched=True
            ),
            "project": lambda: short_task_wait(
                worker_process, celery_app, PROJECT, prefetched=False
            ),
        }
    )
    assert t["project"].median < t["defaults"].median
    bench_record(
        BenchRow(
            "Short task behind a long one",
            "Celery defaults: early ack, prefetch multiplier 4",
            "acks_late, prefetch multiplier 1",
            "a 5 s task on worker A; an idle worker B joins; wait of the short task",
            t["defaults"].show(),
            t["project"].show(),
            ratios(t["defaults"], t["project"]),
        )
    )
