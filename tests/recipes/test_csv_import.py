"""Proof for docs/recipes/csv-import.md: restartable, validated, with honest progress."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import signal
from collections.abc import Callable, Iterator
from decimal import Decimal
from urllib.parse import quote

import psycopg
import pytest
from celery import Celery
from celery.app.backends import by_name
from celery.backends.base import DisabledBackend
from celery.result import AsyncResult
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, ProgrammingError, connection, transaction
from django.urls import resolve, reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from snippets.recipes import csv_import
from snippets.recipes.csv_import import (
    ProductRow,
    clean_row,
    import_batch,
    import_products,
    import_progress,
    numbered_rows,
    start_import,
)
from snippets.recipes.csv_import_naive import import_csv_naive, poll_naive
from snippets.recipes.models import ImportJob, Product
from snippets.recipes.order_workflow import payment_webhook
from tests.harness.net import free_port
from tests.harness.publishes import recording_publishes
from tests.harness.wait import wait_until
from tests.recipes.helpers import run_web_process, uploader

pytestmark = pytest.mark.django_db(transaction=True)

HEADER = "sku,name,price"
LOGGER = csv_import.__name__  # the pattern logs under its module's path


def csv_bytes(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode() if lines else b""


def products_csv(n: int, price: str = "9.99") -> bytes:
    return csv_bytes(HEADER, *(f"SKU-{i:05},Product {i},{price}" for i in range(1, n + 1)))


def job_for(content: bytes) -> ImportJob:
    """A job whose task the test publishes itself (to pick the batch size or the queue)."""
    return ImportJob.objects.create(
        owner=uploader(), file=ContentFile(content, name="products.csv")
    )


def job_state(job: ImportJob) -> ImportJob:
    job.refresh_from_db()
    return job


def finished(job: ImportJob, timeout: float = 60) -> ImportJob:
    return wait_until(
        lambda: (j := job_state(job)).status in ("done", "failed") and j,
        timeout=timeout,
        what=f"job {job.pk} finished",
    )


@pytest.fixture
def media(settings, tmp_path):
    """Uploads in a directory of this test, for this process and any worker subprocess."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return settings.MEDIA_ROOT


@pytest.fixture(params=["orm", pytest.param("copy", marks=pytest.mark.services("postgres"))])
def loader(request, monkeypatch) -> str:
    """The proofs that take it run on both loaders: the portable ORM upsert and PostgreSQL's
    COPY (what start_import() picks is patched for the in-thread worker; a worker subprocess
    gets the loader in the task's arguments)."""
    monkeypatch.setattr(csv_import, "default_loader", lambda: request.param)
    return request.param


def waiting_on_locks() -> list[str]:
    """The statements of the test database's sessions waiting on a lock (a row another
    transaction holds)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return [query for (query,) in cursor.fetchall()]


@pytest.fixture
def progress(client, settings) -> Callable[[ImportJob], dict]:
    settings.ROOT_URLCONF = "snippets.recipes.urls"
    client.force_login(uploader())  # the owner of every job the tests make

    def read(job: ImportJob) -> dict:
        response = client.get(f"/imports/{job.pk}/progress")
        assert response.status_code == 200
        return response.json()

    return read


def test_another_users_job_is_a_404_like_an_id_nobody_has(client, settings, progress, media):
    """Logged in as someone else: the same `404` as for an id that does not exist, so walking
    the sequential ids reveals neither the jobs nor the rows their errors quote."""
    job = job_for(csv_bytes(HEADER, "SKU-1,Kettle,not-a-price"))
    assert progress(job)["status"] == "pending"  # its owner reads it
    client.force_login(uploader("someone-else"))
    response = client.get(f"/imports/{job.pk}/progress")
    assert (response.status_code, response.json()) == (404, {"error": f"no import job {job.pk}"})


@pytest.mark.django_db  # no worker, no rows: skip the flush
@pytest.mark.parametrize(
    ("name", "url", "view", "kwargs"),
    [
        ("import-progress", "/imports/7/progress", import_progress, {"job_id": 7}),
        ("payment-webhook", "/payments/webhook", payment_webhook, {}),
    ],
    ids=["progress", "webhook"],
)
def test_the_urls_route_each_path_to_its_view_and_its_name_reverses_to_it(name, url, view, kwargs):
    """The URLconf the page shows (snippets/recipes/urls.py): each path reaches its view, and
    `reverse()` of its name gives the path back, as a template's `{% url %}` would."""
    urls = "snippets.recipes.urls"
    match = resolve(url, urlconf=urls)
    assert (match.func, match.url_name, match.kwargs) == (view, name, kwargs)
    assert reverse(name, urlconf=urls, kwargs=kwargs) == url


def test_an_anonymous_progress_request_is_refused(client, settings, media):
    """No session: `401`, whatever the id."""
    settings.ROOT_URLCONF = "snippets.recipes.urls"
    job = job_for(csv_bytes(HEADER))
    response = client.get(f"/imports/{job.pk}/progress")
    assert (response.status_code, response.json()) == (401, {"error": "log in first"})


@contextlib.contextmanager
def holding_sku(sku: str) -> Iterator[None]:
    """Insert `sku` in an open transaction: an import that reaches it waits (a slow import,
    made deterministic) until the block ends and the insert is rolled back."""
    s = connection.settings_dict
    with psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"],
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
    ) as conn:
        conn.execute(
            "INSERT INTO recipes_product (sku, name, price, verified)"
            " VALUES (%s, 'held', 0, false)",
            [sku],
        )
        try:
            yield
        finally:
            conn.rollback()


def test_import_upserts_rows_and_records_malformed_lines(celery_worker, media, progress, loader):
    """quoted commas, bad prices, a missing sku and a sku repeated in one batch: the good rows
    import (the last of the repeated sku wins), the bad ones are recorded at lines 4, 6 and 7."""
    content = csv_bytes(
        HEADER,
        "SKU-1,Kettle,19.90",
        '"SKU-2","Mug, large",4.50',
        "SKU-3,Teapot,abc",  # line 4: not a price
        "SKU-4,Spoon,0.99",
        ",Nameless,1.00",  # line 6: no sku
        "SKU-6,Tray,-3",  # line 7: negative
        "SKU-1,Kettle v2,21.00",  # the same sku again, in the same batch: the last one wins
    )
    job = finished(start_import(ContentFile(content, name="products.csv"), uploader()))

    assert job.status == "done"
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["SKU-1", "SKU-2", "SKU-4"]
    assert Product.objects.get(sku="SKU-2").name == "Mug, large"
    assert Product.objects.get(sku="SKU-1").name == "Kettle v2"
    assert [e["line"] for e in job.row_errors] == [4, 6, 7]
    assert job.row_errors[0]["errors"] == {"price": ["Enter a number."]}
    assert (job.total_rows, job.processed_rows, job.imported_rows, job.error_rows) == (7, 7, 4, 3)
    body = progress(job)
    assert (body["status"], body["finished"], body["percent"], body["errors"]) == (
        "done",
        True,
        100.0,
        3,
    )


@pytest.mark.services("postgres")
@pytest.mark.django_db  # no worker: the test's own transaction is enough
def test_postgresql_refuses_an_upsert_that_touches_a_row_twice():
    """Why the loaders keep one row per sku (last_per_sku()) before an upsert."""
    twice = [Product(sku="SKU-1", name="a", price=1), Product(sku="SKU-1", name="b", price=2)]
    with (
        pytest.raises(ProgrammingError, match="cannot affect row a second time"),
        transaction.atomic(),
    ):
        Product.objects.bulk_create(
            twice, update_conflicts=True, unique_fields=["sku"], update_fields=["name"]
        )


@pytest.mark.parametrize("content", [b"", csv_bytes(HEADER)], ids=["empty", "header-only"])
def test_an_empty_file_completes_with_zero_of_zero(celery_worker, media, progress, content):
    """an empty file and a header-only file: done, 0 of 0, 100 %."""
    job = finished(start_import(ContentFile(content, name="products.csv"), uploader()))

    assert (job.status, job.total_rows, job.processed_rows, job.imported_rows) == ("done", 0, 0, 0)
    body = progress(job)
    assert (body["finished"], body["percent"], body["total"]) == (True, 100.0, 0)


def test_a_missing_column_fails_the_job_and_the_view_says_so(celery_worker, media, progress):
    """`failed`, not 0 % progress."""
    job = finished(
        start_import(ContentFile(csv_bytes("sku,name", "SKU-1,Kettle"), name="x.csv"), uploader())
    )

    assert job.status == "failed"
    assert "missing columns: ['price']" in job.error
    body = progress(job)
    assert (body["status"], body["finished"], body["percent"]) == ("failed", True, 0.0)
    assert not Product.objects.exists()


def test_unknown_columns_cannot_set_a_field(celery_worker, media):
    """Columns outside the allow-list are ignored: the CSV cannot set any other field."""
    content = csv_bytes(HEADER + ",verified,id", "SKU-1,Kettle,19.90,1,999")
    job = finished(start_import(ContentFile(content, name="products.csv"), uploader()))

    product = Product.objects.get(sku="SKU-1")
    assert (job.status, product.verified) == ("done", False)
    assert product.pk != 999


@pytest.mark.antipattern(task=import_csv_naive)
def test_why_naive_create_row_lets_the_csv_set_any_field(celery_worker, tmp_path):
    """Mass assignment: the CSV's `verified` and `id` columns go straight into the row; and
    the result reports the caller's total, not what happened."""
    path = tmp_path / "products.csv"
    path.write_bytes(csv_bytes(HEADER + ",verified,id", "SKU-1,Kettle,19.90,1,999"))

    result = import_csv_naive.delay(str(path), 1000).get(timeout=30)

    product = Product.objects.get(sku="SKU-1")
    assert (product.verified, product.pk) == (True, 999)
    assert result == {"status": "complete", "processed": 1000}  # one row was in the file


@pytest.mark.antipattern(task=import_csv_naive)
def test_why_naive_crashes_on_an_unknown_column(celery_worker, tmp_path):
    """The naive task passes every column to the model and crashes on an unknown one."""
    path = tmp_path / "products.csv"
    path.write_bytes(csv_bytes(HEADER + ",colour", "SKU-1,Kettle,19.90,red"))

    with pytest.raises(TypeError, match="unexpected keyword"):
        import_csv_naive.delay(str(path), 1).get(timeout=30)


def test_running_a_job_again_changes_nothing_and_a_new_upload_updates(
    celery_worker, media, loader, caplog
):
    """Running a job again changes nothing (and says so in the module's log, with the job's id);
    a new upload of changed rows updates them."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    job = finished(start_import(ContentFile(products_csv(30), name="products.csv"), uploader()))
    assert import_products.delay(job.pk).get(timeout=30) == {"processed": 30, "imported": 30}
    assert job_state(job).imported_rows == 30  # the redelivered message counted nothing twice
    assert (LOGGER, f"import {job.pk} is already done") in [
        (r.name, r.getMessage()) for r in caplog.records
    ]  # the module's own logger: LOGGING can configure it by the module's path

    again = finished(
        start_import(ContentFile(products_csv(30, price="5.00"), name="p.csv"), uploader())
    )
    assert again.status == "done"
    assert Product.objects.count() == 30
    assert set(Product.objects.values_list("price", flat=True)) == {Decimal("5.00")}


def test_a_second_run_of_a_job_stops_at_the_checkpoint_and_counts_nothing_twice(media, loader):
    """Two runs read the same checkpoint (a re-published pending job, or a redelivery while the
    first still works): the batch the first committed is refused to the second, whose upsert
    is rolled back (a newer upload's price, written in between, stays)."""
    job = job_for(products_csv(4))
    batch = list(numbered_rows(job))[:2]
    assert import_batch(job.pk, batch, offset=0, loader=loader) is True  # the first run
    Product.objects.filter(sku="SKU-00001").update(price=Decimal("5.00"))  # a newer upload
    assert import_batch(job.pk, batch, offset=0, loader=loader) is False  # one batch behind
    job.refresh_from_db()
    assert (job.processed_rows, job.imported_rows) == (2, 2)
    assert Product.objects.get(sku="SKU-00001").price == Decimal("5.00")  # not the stale 9.99


WEB_PROCESS_BROKER_DOWN = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.ERROR, format="LOG %(name)s %(message)s")
from django.core.files.base import ContentFile
from django.db import transaction
from snippets.recipes.csv_import import (
    import_batch,
    import_products,
    numbered_rows,
    start_import,
)
from snippets.recipes.models import ImportJob

from django.contrib.auth import get_user_model
owner = get_user_model().objects.get_or_create(username="uploader")[0]
job = start_import(ContentFile(b"sku,name,price\\nSKU-1,Kettle,9.90\\n", name="p.csv"), owner)
print("pattern returned", job.pk, flush=True)
try:
    with transaction.atomic():
        naive = ImportJob.objects.create(owner=owner, file=ContentFile(b"sku\\n", name="n.csv"))
        import_products.delay_on_commit(naive.pk)
    print("naive returned", flush=True)
except Exception as exc:
    print("naive raised", type(exc).__name__, naive.pk, flush=True)
"""


@pytest.mark.services("broker")
def test_broker_down_at_upload_the_job_is_saved_and_left_pending(media):
    """The web process cannot reach the broker: the upload still answers with its job."""
    web = run_web_process(
        WEB_PROCESS_BROKER_DOWN,
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        DJANGO_MEDIA_ROOT=media,
    )
    assert web.returncode == 0, web.stderr
    [job_id] = re.findall(r"pattern returned (\d+)", web.stdout)
    assert "LOG django.db.backends.base Error calling" in web.stdout  # logged, not raised
    assert ImportJob.objects.get(pk=job_id).status == "pending"  # for the re-publishing job
    # delay_on_commit (why): the row is committed, then the caller gets the exception.
    [naive_id] = re.findall(r"naive raised OperationalError (\d+)", web.stdout)
    assert ImportJob.objects.filter(pk=naive_id).exists()


@pytest.mark.antipattern(task=import_csv_naive)
def test_why_naive_rerun_fails_on_the_rows_it_already_made(celery_worker, tmp_path):
    """A redelivery starts again at row 1: on a unique key it fails at once (and the rest of
    the file never imports); without one, it would duplicate every row."""
    path = tmp_path / "products.csv"
    path.write_bytes(products_csv(30))
    import_csv_naive.delay(str(path), 30).get(timeout=30)

    with pytest.raises(IntegrityError):
        import_csv_naive.delay(str(path), 30).get(timeout=30)


@pytest.mark.services("postgres")
def test_progress_is_monotonic_while_running_and_final_after(
    celery_worker, media, progress, loader
):
    """The view is polled while the import runs (held at row 550 of 1,200: 41.7 %, to one
    decimal) and after."""
    job = job_for(products_csv(1200))
    seen = []
    with holding_sku("SKU-00550"):
        import_products.delay(job.pk, 100)
        mid = wait_until(
            lambda: (b := progress(job))["processed"] == 500 and b, what="the first 5 batches"
        )
        seen.append(mid["percent"])
        assert (mid["status"], mid["finished"], mid["total"], mid["percent"]) == (
            "running",
            False,
            1200,
            41.7,
        )
    while not (body := progress(job))["finished"]:
        seen.append(body["percent"])
    seen.append(body["percent"])

    assert seen == sorted(seen)  # never backwards
    assert (body["status"], body["percent"], body["imported"]) == ("done", 100.0, 1200)


@pytest.mark.services("postgres")
@pytest.mark.antipattern(task=import_csv_naive)
def test_why_polling_state_then_info_races_and_divides_by_zero(celery_worker, tmp_path):
    """The naive poll reads the backend twice. Held at row 150, the task is in PROGRESS: with
    the caller's total_rows=0 the poll divides by zero. Then the test pauses between the two
    reads, as a scheduler can: the task fails meanwhile, and `.info` is the exception."""
    path = tmp_path / "products.csv"
    path.write_bytes(products_csv(200) + b"SKU-00001,Duplicate,1.00\r\n")  # fails at the end
    with holding_sku("SKU-00150"):
        task_id = import_csv_naive.delay(str(path), 0).id
        wait_until(lambda: import_csv_naive.AsyncResult(task_id).state == "PROGRESS")
        with pytest.raises(ZeroDivisionError):
            poll_naive(task_id)
        result = import_csv_naive.AsyncResult(task_id)
        assert result.state == "PROGRESS"  # the first read
    wait_until(lambda: import_csv_naive.AsyncResult(task_id).failed(), what="the failure")
    with pytest.raises(AttributeError):
        result.info.get("current", 0)  # the second read: an IntegrityError, not a dict
    assert poll_naive(task_id) is None  # and once failed, the poll says nothing at all


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
def test_without_a_result_backend_progress_is_written_nowhere():
    """update_state() calls backend.store_result(). With no result backend configured, Celery
    uses DisabledBackend (celery.app.backends.by_name: `backend or "disabled"`): the write is
    a silent no-op, and reading the state back raises (AttributeError on Celery 5.7.0)."""
    backend = by_name(None)(app=Celery("no-result-backend", set_as_current=False))
    assert isinstance(backend, DisabledBackend)
    backend.store_result("t-1", {"current": 1, "total": 2}, "PROGRESS")  # no error
    with pytest.raises(AttributeError):
        AsyncResult("t-1", backend=backend).state  # noqa: B018
    with pytest.raises(NotImplementedError, match="No result backend"):
        AsyncResult("t-1", backend=backend).get(timeout=1)


@pytest.mark.services("postgres", "broker")
@pytest.mark.proves_idempotent(task=import_products)
def test_worker_killed_mid_file_resumes_without_duplicates(worker_process, media, loader):
    """SIGKILL the pool child while batch 3 is in flight: the message is redelivered, the
    import resumes at the checkpoint (200), and every counter ends exact."""
    wp = worker_process(env={"DJANGO_MEDIA_ROOT": media})
    job = job_for(products_csv(500))
    with holding_sku("SKU-00250"):
        import_products.apply_async((job.pk, 100, loader), queue=wp.queue)
        wait_until(lambda: job_state(job).processed_rows == 200, what="the checkpoint at 200")
        [child] = wp.pool_pids()
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: wp.pool_pids() not in ([], [child]), what="a new pool child")
    job = finished(job)

    assert job.status == "done"
    assert (job.total_rows, job.processed_rows, job.imported_rows) == (500, 500, 500)
    assert Product.objects.count() == 500
    assert "WorkerLostError" in wp.log()  # it really died mid-task
    assert "retry: Retry in 5s: WorkerLostError" in wp.log()  # retried, 5 s later (the task's)


@pytest.mark.django_db  # no worker, no rows: skip the flush
def test_the_import_has_its_own_finite_limits_below_the_visibility_timeout(celery_app):
    """(1) on the task: soft below hard, both set on the task itself and below the broker's
    visibility timeout, so a long file goes in several bounded runs (the proofs pass a shorter
    limit per call instead)."""
    visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
    task = import_products
    assert 0 < task.soft_time_limit < task.time_limit < visibility


@pytest.mark.services("postgres", "broker")
def test_soft_time_limit_leaves_a_checkpoint_and_the_import_continues(
    worker_process, media, loader
):
    """The soft limit fires in batch 3: its transaction rolls back, the checkpoint stays at
    200, and the task continues from there. Continuations are bounded by max_retries."""
    wp = worker_process(env={"DJANGO_MEDIA_ROOT": media})
    job = job_for(products_csv(500))
    limits = {"soft_time_limit": 2, "time_limit": 30, "queue": wp.queue}
    with holding_sku("SKU-00250"):
        import_products.apply_async((job.pk, 100, loader), **limits)
        wp.wait_for_log("paused by its soft time limit", timeout=60)
        assert (job_state(job).status, job.processed_rows) == ("running", 200)
    job = finished(job)
    assert (job.status, job.processed_rows, job.imported_rows) == ("done", 500, 500)
    assert Product.objects.count() == 500
    assert "retry: Retry in 1s: SoftTimeLimitExceeded" in wp.log()  # continued a second later

    # The last continuation allowed: the limit fires again, and the job is marked failed.
    stuck = job_for(products_csv(600))
    with holding_sku("SKU-00550"):
        import_products.apply_async(
            (stuck.pk, 100, loader), retries=import_products.max_retries, **limits
        )
        stuck = finished(stuck)
    assert stuck.status == "failed"
    assert "SoftTimeLimitExceeded" in stuck.error
    assert stuck.processed_rows == 500  # still a valid checkpoint to resume from


@pytest.mark.services("postgres", "broker")
def test_two_runs_of_one_job_at_once_the_second_stops_and_counts_nothing(worker_process, media):
    """Two runs of one job at once (a re-published pending job while the first still works),
    on the default loader: the second starts at the checkpoint (200) and waits on the first
    one's uncommitted rows; when the first commits the batch, the second finds the checkpoint
    moved, rolls back and stops, and every counter ends exact. Both wait in a `COPY`: the
    loader `default_loader()` picks on PostgreSQL."""
    wp = worker_process(concurrency=2, env={"DJANGO_MEDIA_ROOT": media})
    job = job_for(products_csv(500))
    with holding_sku("SKU-00250"):
        first = import_products.apply_async((job.pk, 100), queue=wp.queue)
        wait_until(lambda: job_state(job).processed_rows == 200, what="the checkpoint at 200")
        second = import_products.apply_async((job.pk, 100), queue=wp.queue)
        waiting = wait_until(
            lambda: len(w := waiting_on_locks()) == 2 and w, what="both runs waiting in batch 3"
        )
        # default_loader() on PostgreSQL: both runs stream their batch with COPY
        assert all(q.startswith(f"COPY {Product._meta.db_table} ") for q in waiting), waiting

    assert first.get(timeout=60) == {"processed": 500, "imported": 500}
    assert second.get(timeout=60) == {"processed": 200, "imported": None}
    job = job_state(job)
    assert (job.status, job.processed_rows, job.imported_rows) == ("done", 500, 500)
    assert Product.objects.count() == 500
    assert "another run is ahead of this one; stopping" in wp.log()


# Property-based: files the outside world controls, valid and malformed rows mixed.
FIELD_LIMIT = 131072  # csv.field_size_limit(): a longer field is a file-level error
SKUS = st.sampled_from(["SKU-1", "SKU-2", "SKU-3", " SKU-4 ", "sku-ü"])  # few: duplicates
NAME = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=30
).filter(lambda s: s.strip())
PRICE = st.decimals(0, Decimal("99999999.99"), places=2).map(str)
BAD_PRICE = st.sampled_from(["abc", "-1", "1.234", "", "NaN", "Infinity", "123456789.00", "1,5"])


def encoded(*fields: str) -> bytes:
    """One CSV record: fields quoted when needed, CRLF-terminated, as UTF-8."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(fields)
    return out.getvalue().encode()


ROWS = st.one_of(
    st.tuples(st.just("valid"), SKUS, NAME, PRICE),
    st.tuples(st.just("price"), SKUS, NAME, BAD_PRICE),
    st.tuples(st.just("sku"), st.sampled_from(["", "  "]), NAME, PRICE),
    st.tuples(st.just("sku"), st.text("x", min_size=41, max_size=300), NAME, PRICE),
    st.tuples(st.just("name"), SKUS, st.text("y", min_size=201, max_size=5000), PRICE),
    st.tuples(st.just("name"), SKUS, NAME.map(lambda n: n + "\x00"), PRICE),
    st.tuples(st.just("name"), SKUS, st.sampled_from([b"caf\xe9", b"\xff\xfe", b"\xc3("]), PRICE),
    st.tuples(st.just("price"), SKUS, NAME),  # a short row: no price column
    st.tuples(st.just("blank")),  # an empty line: skipped, neither imported nor an error
    st.tuples(st.just("file"), SKUS, st.just("z" * (FIELD_LIMIT + 1)), PRICE),
)


def record(kind: str, *fields) -> bytes:
    if kind == "blank":
        return b"\r\n"
    if any(isinstance(f, bytes) for f in fields):  # bytes that are not UTF-8, spliced in
        raw = next(f for f in fields if isinstance(f, bytes))
        text = ["\x01" if isinstance(f, bytes) else f for f in fields]
        return encoded(*text).replace(b"\x01", raw)
    return encoded(*fields)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(ROWS, max_size=25),
    batch_size=st.integers(1, 6),
    bom=st.booleans(),
)
@example(
    rows=[("valid", "SKU-1", "Kettle", "1.00"), ("name", "SKU-2", b"caf\xe9", "2.00")],
    batch_size=1,
    bom=True,
)
@example(  # a sku that is not UTF-8: the sku field's own utf8 validator makes it a row error
    rows=[("sku", b"caf\xe9", "Kettle", "1.00"), ("valid", "SKU-1", "Mug", "2.00")],
    batch_size=1,
    bom=False,
)
@example(  # a plain sku one over max_length: the shortcut must send it to the field's error
    rows=[("sku", "x" * 41, "Kettle", "1.00")],
    batch_size=1,
    bom=False,
)
def test_property_any_file_imports_every_valid_row_once_and_records_every_bad_one(
    celery_worker, media, loader, rows, batch_size, bom
):
    """Hypothesis, 30 generated files, batch sizes 1 to 6: valid rows mixed with bad prices, empty
    or oversized skus and names, NUL characters, bytes that are not UTF-8, short rows, blank lines,
    quoted commas and line breaks, repeated skus and a byte-order mark: the worker imports each
    valid row once (the last of a repeated sku wins), records every bad row with its line and the
    field at fault, and a field over the `csv` module's 128 KiB limit fails the job while counting,
    before anything is imported."""
    Product.objects.all().delete()
    ImportJob.objects.all().delete()
    content = (b"\xef\xbb\xbf" if bom else b"") + encoded("sku", "name", "price")
    expected_errors, expected, valid_rows, records = [], {}, 0, 0
    for kind, *fields in rows:
        content += record(kind, *fields)
        if kind == "blank":
            continue
        records += 1
        line = content.count(b"\n")  # the record's last physical line (names may hold \n)
        if kind == "valid":
            valid_rows += 1
            sku, name, price = fields
            expected[sku.strip()] = (name.strip(), Decimal(price))  # the last one wins
        elif kind != "file":
            expected_errors.append((line, kind))
    job = job_for(content)

    with recording_publishes() as published:
        result = import_products.delay(job.pk, batch_size)
        with contextlib.suppress(Exception):
            result.get(timeout=60)  # the job row says how it ended
        job = finished(job)
    assert [p["name"] for p in published] == [import_products.name]  # no retries

    if any(kind == "file" for kind, *_ in rows):  # one field over the csv module's limit
        assert (job.status, result.state) == ("failed", "FAILURE")
        assert "field larger than field limit" in job.error
        assert not Product.objects.exists()  # found while counting: nothing half-imported
        return
    assert (job.status, result.state) == ("done", "SUCCESS")
    assert (job.total_rows, job.processed_rows) == (records, records)
    assert (job.imported_rows, job.error_rows) == (valid_rows, len(expected_errors))
    imported = {p.sku: (p.name, p.price) for p in Product.objects.all()}
    assert imported == expected
    recorded = [(e["line"], e["errors"]) for e in job.row_errors]
    assert [line for line, _ in recorded] == [line for line, _ in expected_errors]
    for (_line, errors), (_, kind) in zip(recorded, expected_errors, strict=True):
        assert list(errors) == [kind], errors  # the field at fault
        assert all(errors[kind]), errors  # and why


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["get", "post", "put", "delete"]),
    segment=st.one_of(
        st.integers(-(2**70), 2**70).map(str), st.text(max_size=20), st.just("{job}")
    ),
    payload=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.text(max_size=8))),
)
@example(method="get", segment=str(2**63), payload=None)
@example(method="post", segment="{job}", payload={"status": "done"})
def test_property_any_progress_request_is_answered_without_a_task_or_a_5xx(
    client, settings, celery_worker, media, method, segment, payload
):
    """Hypothesis: any id, text or method on the progress URL: `200` for the job, a JSON `404`
    naming the id for no such job (out-of-range ids included), `405` for anything but `GET`, never a
    `5xx`, never a published task."""
    settings.ROOT_URLCONF = "snippets.recipes.urls"
    client.force_login(uploader())
    ImportJob.objects.all().delete()
    job = job_for(csv_bytes(HEADER))
    segment = segment.replace("{job}", str(job.pk))
    with recording_publishes() as published:
        response = getattr(client, method)(
            f"/imports/{quote(segment, safe='')}/progress",
            data=payload,
            content_type="application/json",
        )
    assert published == []  # reading progress never starts anything
    if not re.fullmatch(r"[0-9]+", segment):
        assert response.status_code == 404  # not an id: the URLconf's <int:> refuses it
    elif method != "get":
        assert response.status_code == 405  # read-only, whatever the body says
    elif segment == str(job.pk):
        assert (response.status_code, response.json()["status"]) == (200, "pending")
    else:  # an id, but no such job (or out of the column's range): the view says which
        assert response.status_code == 404
        assert response.json() == {"error": f"no import job {int(segment)}"}
    assert job_state(job).status == "pending"  # nothing a request sends changes the job


def form_clean(values: tuple[str | None, ...]) -> tuple[dict, dict[str, list[str]]]:
    """What the form's fields alone say of a row: the reference clean_row() must match."""
    cleaned, errors = {}, {}
    for (column, field), value in zip(ProductRow.base_fields.items(), values, strict=True):
        try:
            cleaned[column] = field.clean(value)
        except ValidationError as exc:
            errors[column] = exc.messages
    return cleaned, errors


TEXT = st.one_of(
    st.none(),
    st.text(max_size=45),  # surrogates (bytes that were not UTF-8), NUL, spaces, any category
    st.text("ab \t\\", max_size=45),
    st.sampled_from(["SKU-1", " SKU-1", "SKU-1 ", "x" * 40, "x" * 41, "y" * 200, "y" * 201]),
)
PRICE_TEXT = st.one_of(
    TEXT,
    st.from_regex(r"[ +-]?[0-9_]{0,11}(\.[0-9]{0,4})?([eE][+-]?[0-9])?[ ]?", fullmatch=True),
    st.sampled_from(["0", "0.00", "007.50", "12345678.99", "123456789", "1.234", ".5", "5.",
                     "NaN", "-0", "1_000", "\u0661\u0662", "1e2", "99999999.999"]),
)  # fmt: skip


@settings(max_examples=2000, deadline=None)
@given(sku=TEXT, name=TEXT, price=PRICE_TEXT)
@example(sku="SKU-1", name="Kettle", price="007.50")
@example(sku="SKU-1", name="Kettle\udce9", price="1.00")
@example(sku="SKU-1", name="Kettle ", price="1.00")  # a space to strip: the fields' row
@example(sku="SKU-1 ", name="Kettle", price="1.00")  # the same for the sku
@example(sku="SKU-1", name="Kettle", price="0.50")  # under 1, over the minimum of 0
def test_property_clean_row_says_what_the_form_says_of_any_row(sku, name, price):
    """Hypothesis, 2,000 rows: clean_row()'s shortcut for plain rows (printable text, no
    surrounding space, a price of plain digits) gives exactly the form's cleaned values and
    errors, whatever the text: the shortcut is speed, never a second set of rules."""
    assert clean_row((sku, name, price)) == form_clean((sku, name, price))
