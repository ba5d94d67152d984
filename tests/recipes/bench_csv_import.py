"""Benchmark for docs/recipes/csv-import.md (not a timed test: run it on purpose).

The same file into PostgreSQL, on 50,000 and on 1,000,000 rows (times BENCH_SCALE), through
the real in-thread worker: the naive per-row create() task (50,000 rows only: one commit per
row), the recipe with the portable ORM upsert, the recipe with COPY, and a bare ``COPY`` of the
file into the same table as the floor (no validation, no progress, no checkpoint). Every
variant starts from an empty table and must leave the same rows, and is timed. Memory is
measured apart, in untimed runs of the COPY recipe on both files, twice: the peak of the Python
heap the import allocates (tracemalloc, every thread: the in-thread worker runs in this
process), and the peak RSS of the process that ran the import. Not this process's (it has
reached its high-water mark before the first import and reuses the memory it freed, so every
variant showed the same peak): a real prefork worker subprocess, the recommended deployment
with one pool child replaced after every task (a declared deviation), so that each import runs
in a fresh child; this process samples that child's high-water mark (VmHWM) while it runs.
Variants alternate, ``BENCH_RUNS`` (5) rounds. The rows go to ``bench_record`` (the table of
``nox -s bench``).

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... CELERY_RESULT_BACKEND=redis://... \\
      .venv/bin/pytest tests/recipes/bench_csv_import.py -p no:cov -s
"""

from __future__ import annotations

import gc
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from django.core.files import File
from django.db import connection, transaction

from snippets.recipes.csv_import import BATCH_SIZES, import_products
from snippets.recipes.csv_import_naive import import_csv_naive
from snippets.recipes.models import ImportJob, Product
from tests.bench import BenchRow, Spread, alternating, ratios, scaled
from tests.harness.celery import WorkerProcess
from tests.harness.wait import wait_until
from tests.recipes.helpers import uploader

SMALL, LARGE = scaled(50_000), scaled(1_000_000)
TABLE = Product._meta.db_table
DIGEST = f"""SELECT count(*), md5(string_agg(concat_ws('|', sku, name, price, verified), ','
    ORDER BY sku)) FROM {TABLE}"""

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("postgres")]


def write_csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as out:
        out.write("sku,name,price\r\n")
        out.writelines(f"SKU-{i:07},Product {i},{i % 997}.99\r\n" for i in range(rows))
    return path


def traced_peak_mb(run: Callable[[], object]) -> Callable[[], float]:
    """The peak of the Python heap `run` allocates above what was allocated before it, in MB."""

    def measured() -> float:
        sql(f"TRUNCATE {TABLE}")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            run()
            return (tracemalloc.get_traced_memory()[1] - before) / 2**20
        finally:
            tracemalloc.stop()

    return measured


def sql(statement: str) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone() if cursor.description else ()


def bare_copy(path: Path) -> None:
    """The floor: the file's bytes straight into the table, PostgreSQL parsing the CSV."""
    with transaction.atomic(), connection.cursor() as cursor, path.open("rb") as f:
        statement = f"COPY {TABLE} (sku, name, price) FROM STDIN (FORMAT csv, HEADER)"
        with cursor.cursor.copy(statement) as copy:
            while chunk := f.read(1 << 16):
                copy.write(chunk)


def naive(path: Path, rows: int) -> None:
    assert import_csv_naive.delay(str(path), rows).get(timeout=3600)["processed"] == rows


def recipe(path: Path, rows: int, loader: str) -> Callable[[], float]:
    def run() -> float:
        with path.open("rb") as f:
            job = ImportJob.objects.create(owner=uploader(), file=File(f, name="products.csv"))
        started = time.perf_counter()
        result = import_products.delay(job.pk, loader=loader).get(timeout=3600)
        assert result == {"processed": rows, "imported": rows}
        return started

    return run


class Variants:
    """Each variant from an empty table; its time, and the rows it left."""

    def __init__(self) -> None:
        self.digests: set[tuple] = set()

    def variant(self, name: str, run: Callable[[], float | None]) -> Callable[[], float]:
        def timed() -> float:
            sql(f"TRUNCATE {TABLE}")
            gc.collect()
            started = time.perf_counter()
            started = run() or started  # a recipe starts its clock once its job is stored
            seconds = time.perf_counter() - started
            self.digests.add(sql(DIGEST))
            assert len(self.digests) == 1, f"{name} left other rows: {self.digests}"
            return seconds

        return timed

    def result(self, times: Spread, name: str) -> str:
        return times.show("s", 2)


@pytest.fixture
def place(settings, tmp_path) -> Iterator[str]:
    """Uploads in this test's directory; a column default for the bare COPY; the workload's
    place (PostgreSQL's major version)."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    sql(f"ALTER TABLE {TABLE} ALTER COLUMN verified SET DEFAULT false")  # the model's, in SQL
    major = connection.cursor().connection.info.server_version // 10000
    yield f"into PostgreSQL {major}"
    sql(f"ALTER TABLE {TABLE} ALTER COLUMN verified DROP DEFAULT")


ORM, COPY = f"batches of {BATCH_SIZES['orm']:,}", f"batches of {BATCH_SIZES['copy']:,}"


@pytest.mark.timeout(7200)
def test_bench_csv_import_naive_orm_copy_and_the_copy_floor(
    celery_worker, tmp_path, place, bench_record
):
    small, path = Variants(), write_csv(tmp_path / "small.csv", SMALL)
    t = alternating(
        {
            "naive": small.variant("naive", lambda: naive(path, SMALL)),
            "orm": small.variant("orm", recipe(path, SMALL, "orm")),
            "copy": small.variant("copy", recipe(path, SMALL, "copy")),
            "bare": small.variant("bare", lambda: bare_copy(path)),
        }
    )
    assert next(iter(small.digests))[0] == SMALL  # every variant left the same rows, all of them
    rows = f"{SMALL:,} rows {place}, in-thread worker"
    naive_result = small.result(t["naive"], "naive")
    bench_record(
        BenchRow(
            "CSV import",
            "naive: one create() per row",
            f"recipe, ORM upsert in {ORM}",
            rows,
            naive_result,
            small.result(t["orm"], "orm"),
            ratios(t["naive"], t["orm"]),
        )
    )
    bench_record(
        BenchRow(
            "CSV import, COPY",
            "naive: one create() per row",
            f"recipe, COPY + upsert in {COPY}",
            rows,
            naive_result,
            small.result(t["copy"], "copy"),
            ratios(t["naive"], t["copy"]),
        )
    )
    bench_record(
        BenchRow(
            "CSV import, COPY floor",
            f"recipe, COPY + upsert in {COPY}",
            "bare COPY of the file (the floor: no validation, progress or checkpoint)",
            rows,
            small.result(t["copy"], "copy"),
            small.result(t["bare"], "bare"),
            ratios(t["copy"], t["bare"]),
        )
    )


@pytest.mark.timeout(7200)
def test_bench_csv_import_a_million_rows_and_memory(celery_worker, tmp_path, place, bench_record):
    """The ORM and COPY loaders and the floor on the large file, and the COPY recipe's peak memory
    on the large file against the small one, alternating."""
    large, path = Variants(), write_csv(tmp_path / "large.csv", LARGE)
    small, small_path = Variants(), write_csv(tmp_path / "small.csv", SMALL)
    t = alternating(
        {
            "orm": large.variant("orm", recipe(path, LARGE, "orm")),
            "copy": large.variant("copy", recipe(path, LARGE, "copy")),
            "bare": large.variant("bare", lambda: bare_copy(path)),
            "copy_small": small.variant("copy", recipe(small_path, SMALL, "copy")),
        }
    )
    assert next(iter(large.digests))[0] == LARGE
    rows = f"{LARGE:,} rows {place}, in-thread worker"
    bench_record(
        BenchRow(
            "CSV import, 1M rows",
            f"recipe, ORM upsert in {ORM}",
            f"recipe, COPY + upsert in {COPY}",
            rows,
            large.result(t["orm"], "orm"),
            large.result(t["copy"], "copy"),
            ratios(t["orm"], t["copy"]),
        )
    )
    bench_record(
        BenchRow(
            "CSV import, COPY floor, 1M rows",
            f"recipe, COPY + upsert in {COPY}",
            "bare COPY of the file (the floor)",
            rows,
            large.result(t["copy"], "copy"),
            large.result(t["bare"], "bare"),
            ratios(t["copy"], t["bare"]),
        )
    )
    memory = alternating(
        {
            "large": traced_peak_mb(recipe(path, LARGE, "copy")),
            "small": traced_peak_mb(recipe(small_path, SMALL, "copy")),
        }
    )
    bench_record(
        BenchRow(
            "CSV import, COPY memory",
            f"COPY recipe, {LARGE:,} rows",
            f"COPY recipe, {SMALL:,} rows",
            "peak of the Python heap the import allocates (tracemalloc; untimed runs, the file "
            "streamed)",
            memory["large"].show("MB", 1),
            memory["small"].show("MB", 1),
            ratios(memory["large"], memory["small"]),
        )
    )


def high_water_bytes(child: psutil.Process) -> int:
    """The child's peak RSS so far: the kernel's high-water mark (VmHWM in /proc) where there
    is one, else its RSS now."""
    rss = child.memory_info().rss
    status = Path(f"/proc/{child.pid}/status")
    if status.exists() and (hwm := re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)):
        return max(rss, int(hwm[1]) * 1024)
    return rss  # no /proc: the samples' maximum


def child_peak_mb(
    wp: WorkerProcess, path: Path, rows: int, idle: list[float]
) -> Callable[[], float]:
    """The COPY recipe on `path` in a fresh pool child of `wp`: that child's peak RSS, in MB
    (its RSS before the task goes to `idle`)."""

    def measured() -> float:
        sql(f"TRUNCATE {TABLE}")
        with path.open("rb") as f:
            job = ImportJob.objects.create(owner=uploader(), file=File(f, name="products.csv"))
        [pid] = wait_until(lambda: len(pids := wp.pool_pids()) == 1 and pids, what="one child")
        child = psutil.Process(pid)
        idle.append(child.memory_info().rss / 2**20)
        result = import_products.apply_async((job.pk,), {"loader": "copy"}, queue=wp.queue)
        peak = high_water_bytes(child)
        while not result.ready():  # the child lives until its result is stored
            try:
                peak = max(peak, high_water_bytes(child))
            except (psutil.NoSuchProcess, FileNotFoundError):  # stored and retired since the
                break  # check: its last sample stands (VmHWM only rises)
            time.sleep(0.05)
        assert result.get(timeout=10) == {"processed": rows, "imported": rows}
        assert sql(f"SELECT count(*) FROM {TABLE}")[0] == rows
        # The child ran it: the only one, retired after its one task (--max-tasks-per-child=1).
        wait_until(lambda: pid not in wp.pool_pids(), what=f"child {pid} retired")
        return peak / 2**20

    return measured


@pytest.mark.timeout(3600)
@pytest.mark.services("postgres", "broker")
@pytest.mark.deviation(
    "--max-tasks-per-child=1",
    reason="every import runs in a fresh pool child, so the child's peak RSS is that import's",
)
def test_bench_csv_import_peak_rss_of_the_pool_child(
    worker_process, settings, tmp_path, place, bench_record
):
    """The COPY recipe's peak RSS on the large file against the small one, alternating, each
    import in a fresh pool child of a real prefork worker (concurrency 1)."""
    large, small = (
        write_csv(tmp_path / "large.csv", LARGE),
        write_csv(tmp_path / "small.csv", SMALL),
    )
    wp = worker_process(
        args=["--max-tasks-per-child=1"], env={"DJANGO_MEDIA_ROOT": settings.MEDIA_ROOT}
    )
    idle: list[float] = []
    peak = alternating(
        {
            "large": child_peak_mb(wp, large, LARGE, idle),
            "small": child_peak_mb(wp, small, SMALL, idle),
        }
    )
    bench_record(
        BenchRow(
            "CSV import, COPY peak RSS",
            f"COPY recipe, {LARGE:,} rows",
            f"COPY recipe, {SMALL:,} rows",
            f"{place}; peak RSS of the prefork pool child that ran the import (its kernel "
            "high-water mark; a fresh child per import, --max-tasks-per-child=1; a fresh child "
            f"idles at {Spread(tuple(idle)).show('MB', 0)} before the import)",
            peak["large"].show("MB", 0),
            peak["small"].show("MB", 0),
            ratios(peak["large"], peak["small"]),
        )
    )
