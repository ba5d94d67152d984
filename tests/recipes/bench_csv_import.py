"""Benchmark for docs/recipes/csv-import.md (not a timed test: run it on purpose).

50,000 rows (times BENCH_SCALE) into PostgreSQL through the real in-thread worker: the naive
per-row create() task, then the recipe's batched upsert, on the same file; both must leave the
same rows. The row goes to ``bench_record`` (the table of ``nox -s bench``).

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... CELERY_RESULT_BACKEND=redis://... \\
      .venv/bin/pytest tests/recipes/bench_csv_import.py -p no:cov -s
"""

from __future__ import annotations

import time

import pytest
from django.core.files.base import ContentFile

from snippets.recipes.csv_import import BATCH_SIZE, import_products
from snippets.recipes.csv_import_naive import import_csv_naive
from snippets.recipes.models import ImportJob, Product
from tests.bench import BenchRow, scaled

ROWS = scaled(50_000)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("postgres")]


def rows_snapshot() -> list[tuple]:
    return list(Product.objects.order_by("sku").values_list("sku", "name", "price", "verified"))


@pytest.mark.timeout(1800)
def test_bench_naive_create_vs_batched_upsert(celery_worker, tmp_path, settings, bench_record):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    lines = ["sku,name,price", *(f"SKU-{i:06},Product {i},{i % 997}.99" for i in range(ROWS))]
    content = ("\r\n".join(lines) + "\r\n").encode()
    path = tmp_path / "products.csv"
    path.write_bytes(content)

    started = time.perf_counter()
    import_csv_naive.delay(str(path), ROWS).get(timeout=1800)
    naive = time.perf_counter() - started
    naive_rows = rows_snapshot()
    Product.objects.all().delete()

    job = ImportJob.objects.create(file=ContentFile(content, name="products.csv"))
    started = time.perf_counter()
    assert import_products.delay(job.pk).get(timeout=1800) == {"processed": ROWS, "imported": ROWS}
    recipe = time.perf_counter() - started

    assert rows_snapshot() == naive_rows  # the same resulting rows
    assert len(naive_rows) == ROWS
    bench_record(
        BenchRow(
            "CSV import",
            "naive: one create() per row",
            f"recipe: upserts in batches of {BATCH_SIZE}",
            f"{ROWS:,} rows into PostgreSQL, in-thread worker",
            f"{naive:.1f} s",
            f"{recipe:.1f} s",
            naive / recipe,
        )
    )
