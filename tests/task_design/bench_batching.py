"""Benchmark for docs/task-design/batching.md (not a timed test: run it on purpose).

10,000 items (times BENCH_SCALE) through the real in-thread worker on Redis: one task per item,
then batches of 100 ids per task, on the same rows, alternating (tests/bench.py); each run must
process every item exactly once.
The row goes to ``bench_record`` (the table of ``nox -s bench``).

    CELERY_BROKER_URL=redis://... CELERY_RESULT_BACKEND=redis://... DATABASE_URL=postgres://... \\
      .venv/bin/pytest tests/task_design/bench_batching.py -p no:cov -s
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from celery.result import AsyncResult

from snippets.task_design.batching import BATCH_SIZE, process_all, process_all_one_by_one
from snippets.task_design.models import Item
from tests.bench import BenchRow, alternating, ratios, scaled

ITEMS = scaled(10_000)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("redis", "broker")]


@pytest.mark.timeout(7200)
def test_bench_one_task_per_item_vs_batches(celery_worker, bench_record):
    Item.objects.bulk_create(Item(value=i) for i in range(ITEMS))
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))

    def timed(run: Callable[[list[int]], AsyncResult]) -> Callable[[], float]:
        def once() -> float:
            Item.objects.update(processed_at=None, processed_count=0, score=None)
            started = time.perf_counter()
            assert sum(run(ids).get(timeout=1800)) == ITEMS
            seconds = time.perf_counter() - started
            assert set(Item.objects.values_list("processed_count", flat=True)) == {1}
            return seconds

        return once

    t = alternating({"per_item": timed(process_all_one_by_one), "batched": timed(process_all)})
    bench_record(
        BenchRow(
            "Batching",
            "one task per item",
            f"batches of {BATCH_SIZE} ids per task",
            f"{ITEMS:,} items, in-thread worker",
            t["per_item"].show(),
            t["batched"].show(),
            ratios(t["per_item"], t["batched"]),
        )
    )
