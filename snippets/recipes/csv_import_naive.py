"""ANTI-PATTERN: the CSV import as it circulates; tests/recipes/test_csv_import.py shows each
of its failures next to the pattern in csv_import.py."""

# --8<-- [start:naive]
import csv

from celery import Task, shared_task

from snippets.recipes.models import Product


@shared_task(
    bind=True,
)
def import_csv_naive(self: Task, file_path: str, total_rows: int) -> dict:
    """ANTI-PATTERN: a local path, mass assignment, one INSERT per row, no checkpoint."""
    with open(file_path) as f:
        reader = csv.DictReader(f)
        for i, row in enumerate(reader):
            Product.objects.create(**row)
            if i % 100 == 0:
                self.update_state(state="PROGRESS", meta={"current": i, "total": total_rows})
    return {"status": "complete", "processed": total_rows}


# --8<-- [end:naive]


# --8<-- [start:naive_poll]
def poll_naive(task_id: str) -> float | None:
    """ANTI-PATTERN: two backend reads (state, then info) that can see two different states."""
    result = import_csv_naive.AsyncResult(task_id)
    if result.state == "PROGRESS":
        return result.info.get("current", 0) / result.info.get("total", 1)
    return None


# --8<-- [end:naive_poll]
