"""CSV import with progress: restartable batches, an allow-list, progress on the job row."""

# --8<-- [start:row]
import csv
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from itertools import chain, islice
from operator import itemgetter

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django import forms
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, connection, transaction

from snippets.recipes.models import ImportJob, Product

logger = logging.getLogger("snippets.recipes.csv_import")
BATCH_SIZES = {"orm": 500, "copy": 20_000}  # rows per transaction, by loader
KEPT_ERRORS = 100  # row errors stored on the job; the rest are counted


def utf8(value: str) -> None:
    """Bytes that are not UTF-8 reach a row as lone surrogates: an error of that row."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Not UTF-8 text: save the file as UTF-8.") from None


class ProductRow(forms.Form):
    """The allow-list: a CSV row can set these three fields, and nothing else."""  # (1)!

    sku = forms.CharField(max_length=40, validators=[utf8])
    name = forms.CharField(max_length=200, validators=[utf8])
    price = forms.DecimalField(max_digits=10, decimal_places=2, min_value=0)


# --8<-- [end:row]
# --8<-- [start:clean]
FIELDS = tuple(ProductRow.base_fields)  # the columns read, in this order
SKU, NAME, PRICE = (ProductRow.base_fields[name] for name in FIELDS)
PLAIN_PRICE = re.compile(  # digits the DecimalField accepts as they are: no sign, no exponent
    rf"[0-9]{{1,{PRICE.max_digits - PRICE.decimal_places}}}(?:\.[0-9]{{1,{PRICE.decimal_places}}})?"
).fullmatch


def clean_row(values: tuple[str | None, ...]) -> tuple[dict, dict[str, list[str]]]:
    """(cleaned data, errors) by the form's own fields, without a Form per row."""  # (1)!
    sku, name, price = values
    if (  # (2)!
        sku and name and price and len(sku) <= SKU.max_length and len(name) <= NAME.max_length
        and (sku + name).isprintable() and sku.strip() == sku and name.strip() == name
        and PLAIN_PRICE(price)
    ):  # fmt: skip
        return {"sku": sku, "name": name, "price": Decimal(price)}, {}
    cleaned, errors = {}, {}
    for (column, field), value in zip(ProductRow.base_fields.items(), values, strict=True):
        try:
            cleaned[column] = field.clean(value)
        except ValidationError as exc:
            errors[column] = exc.messages
    return cleaned, errors


# --8<-- [end:clean]
# --8<-- [start:reader]
@contextmanager
def csv_rows(job: ImportJob) -> Iterator[tuple[Iterator[list[str]], list[int]]]:
    """The file's CSV rows after its header, read through the storage API, and where the
    allowed columns are in a row (none for an empty file)."""
    with job.file.open("rb") as stored:
        raw = stored  # the storage's file object, under Django's File wrappers
        while isinstance(raw, File):  # (1)!
            raw = raw.file
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text)  # (2)!
        header = next(reader, None)
        if header is None:  # an empty file: no header, and no rows below it
            header = list(FIELDS)
        position = {column: i for i, column in enumerate(header)}  # a repeated column: the last
        if missing := sorted(set(FIELDS) - set(position)):
            raise ValueError(f"missing columns: {missing}")
        yield reader, [position[column] for column in FIELDS]


def numbered_rows(job: ImportJob) -> Iterator[tuple[int, tuple[str | None, ...]]]:
    """(line number, the row's sku, name and price) for every data row; None for a column a
    short row lacks."""
    with csv_rows(job) as (reader, positions):
        pick, width = itemgetter(*positions), max(positions) + 1  # (3)!
        for row in reader:
            if len(row) >= width:
                yield reader.line_num, pick(row)
            elif row:  # a short row (a blank line is no row)
                yield reader.line_num, tuple(row[i] if i < len(row) else None for i in positions)


def count_rows(job: ImportJob) -> int:
    """The rows numbered_rows() yields, counted without building them (a blank line is no
    row): the count pass reads the whole file, so it does no more than the csv module's."""
    with csv_rows(job) as (reader, _positions):
        return sum(1 for row in reader if row)


# --8<-- [end:reader]
# --8<-- [start:task]
@shared_task(
    bind=True,
    soft_time_limit=300,  # (1)!
    time_limit=330,
    max_retries=20,
    default_retry_delay=5,  # a run lost with its worker resumes 5 s later (project: retry)
)
def import_products(
    self: Task, job_id: int, batch_size: int | None = None, loader: str | None = None
) -> dict[str, int]:
    """Import the job's file from its checkpoint on, one transaction per batch."""
    loader = loader or default_loader()  # (2)!
    batch_size = batch_size or BATCH_SIZES[loader]
    job = ImportJob.objects.get(pk=job_id)
    if job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
        logger.info("import %s is already %s", job_id, job.status)  # a redelivered message
        return {"processed": job.processed_rows, "imported": job.imported_rows}
    try:
        if job.total_rows is None:
            job.total_rows = count_rows(job)  # (3)!
        job.status = ImportJob.Status.RUNNING
        job.save(update_fields=["total_rows", "status", "updated_at"])
        offset = job.processed_rows
        rows = islice(numbered_rows(job), offset, None)  # (4)!
        while batch := list(islice(rows, batch_size)):
            if not import_batch(job_id, batch, offset, loader):
                logger.warning("import %s: another run is ahead of this one; stopping", job_id)
                return {"processed": offset, "imported": None}
            offset += len(batch)
    except SoftTimeLimitExceeded as exc:  # (5)!
        if self.request.retries < self.max_retries:
            logger.warning("import %s paused by its soft time limit; continuing", job_id)
            raise self.retry(exc=exc, countdown=1) from exc
        ImportJob.objects.filter(pk=job_id).update(status=ImportJob.Status.FAILED, error=repr(exc))
        raise
    except Exception as exc:
        ImportJob.objects.filter(pk=job_id).update(status=ImportJob.Status.FAILED, error=repr(exc))
        raise  # logged with the task's context by the failure logger
    ImportJob.objects.filter(pk=job_id).update(status=ImportJob.Status.DONE)
    job.refresh_from_db()
    logger.info("import %s done: %s rows, %s errors", job_id, job.imported_rows, job.error_rows)
    return {"processed": job.processed_rows, "imported": job.imported_rows}


# --8<-- [end:task]
# --8<-- [start:batch]
def import_batch(
    job_id: int, batch: list[tuple[int, tuple[str | None, ...]]], offset: int, loader: str = "orm"
) -> bool:
    """Upsert the valid rows and advance the checkpoint in ONE transaction; False when the
    checkpoint is no longer `offset` (a second run of the job did this batch already)."""
    errors = []

    def valid_rows() -> Iterator[dict]:
        for line, row in batch:
            cleaned, row_errors = clean_row(row)
            if row_errors:
                errors.append({"line": line, "errors": row_errors})
            else:
                yield cleaned

    with transaction.atomic():
        LOADERS[loader](valid_rows())  # (1)!
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.processed_rows != offset:  # another run committed this batch first
            transaction.set_rollback(True)
            return False
        job.processed_rows += len(batch)  # (2)!
        job.imported_rows += len(batch) - len(errors)
        job.error_rows += len(errors)
        job.row_errors = (job.row_errors + errors)[:KEPT_ERRORS]
        job.save(update_fields=["processed_rows", "imported_rows", "error_rows", "row_errors",
                              "updated_at"])  # fmt: skip
    return True


# --8<-- [end:batch]
# --8<-- [start:loaders]
def last_per_sku(rows: Iterable[dict]) -> list[dict]:
    """One row per sku, the file's last: an upsert may not touch a row twice."""  # (1)!
    return list({row["sku"]: row for row in rows}.values())


def upsert_orm(rows: Iterable[dict]) -> None:
    """Portable: one INSERT per batch that updates the rows whose sku exists."""
    target = ["sku"] if connection.features.supports_update_conflicts_with_target else None
    Product.objects.bulk_create(  # (2)!
        [Product(**row) for row in last_per_sku(rows)],
        update_conflicts=True,
        unique_fields=target,
        update_fields=["name", "price"],
    )


TABLE = Product._meta.db_table
STAGING = """CREATE TEMPORARY TABLE import_staging
    (sku varchar(40), name varchar(200), price numeric(10, 2)) ON COMMIT DROP"""


def upsert_copy(rows: Iterable[dict]) -> None:
    """PostgreSQL: COPY the batch straight into the table, as a bare COPY would; when one of
    its skus exists already, the batch goes through a staging table and one upsert instead."""
    rows, sent = iter(rows), []
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(), connection.wrap_database_errors:  # (3)!
                statement = f"COPY {TABLE} (sku, name, price, verified) FROM STDIN"
                with cursor.cursor.copy(statement) as copy:
                    for row in rows:  # (4)!
                        sent.append(row)
                        copy.write_row((row["sku"], row["name"], row["price"], False))
            return
        except IntegrityError:  # an existing or repeated sku: the savepoint undid the COPY
            pass
        cursor.execute(STAGING)  # (5)!
        with cursor.cursor.copy("COPY import_staging (sku, name, price) FROM STDIN") as copy:
            for row in last_per_sku(chain(sent, rows)):
                copy.write_row((row["sku"], row["name"], row["price"]))
        cursor.execute(
            f"""INSERT INTO {TABLE} (sku, name, price, verified)
                SELECT sku, name, price, false FROM import_staging
                ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price = excluded.price"""
        )  # (6)!


LOADERS: dict[str, Callable[[Iterable[dict]], None]] = {"orm": upsert_orm, "copy": upsert_copy}


def default_loader() -> str:
    """COPY where the database has it; the portable upsert everywhere else."""
    return "copy" if connection.vendor == "postgresql" else "orm"


# --8<-- [end:loaders]


# --8<-- [start:start]
from django.contrib.auth.base_user import AbstractBaseUser


def start_import(upload: File, owner: AbstractBaseUser) -> ImportJob:
    """Store the upload where every worker can read it; pass the job's id, not a path."""
    with transaction.atomic():
        job = ImportJob.objects.create(owner=owner, file=upload)  # saved through the storage API
        transaction.on_commit(lambda: import_products.delay(job.pk), robust=True)  # (1)!
    return job


# --8<-- [end:start]


# --8<-- [start:view]
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET  # anything else: 405
def import_progress(request: HttpRequest, job_id: int) -> JsonResponse:
    """GET /imports/<id>/progress: read from the job row, never from the result backend."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=401)
    # Only the uploader's own jobs: ids are sequential and row_errors echo the file's data.
    job = ImportJob.objects.filter(pk=job_id, owner=request.user).first()  # (1)!
    if job is None:
        return JsonResponse({"error": f"no import job {job_id}"}, status=404)
    finished = job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED)
    if job.total_rows:
        percent = round(100 * job.processed_rows / job.total_rows, 1)
    else:  # not counted yet (None), or an empty file (0): no division
        percent = 100.0 if job.status == ImportJob.Status.DONE else 0.0
    return JsonResponse(
        {
            "status": job.status,  # (2)!
            "finished": finished,
            "percent": percent,
            "processed": job.processed_rows,
            "total": job.total_rows,
            "imported": job.imported_rows,
            "errors": job.error_rows,
            "row_errors": job.row_errors[:10],
            "error": job.error,
        }
    )


# --8<-- [end:view]
