"""Batching: split a big job into restartable batches, not one message per item."""

# --8<-- [start:batch_task]
import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from snippets.task_design.models import Item

logger = logging.getLogger(__name__)


@shared_task
def process_batch(item_ids: list[int]) -> int:
    """Process the unprocessed items among item_ids, all or nothing; return how many."""
    with transaction.atomic():  # (1)!
        items = list(
            Item.objects.select_for_update()  # (2)!
            .filter(pk__in=item_ids, processed_at__isnull=True)
            .order_by("pk")
        )
        now = timezone.now()
        for item in items:
            if item.value < 0:
                raise ValueError(f"item {item.pk} has a negative value ({item.value})")  # (3)!
            item.score = item.value * 2
            item.processed_at = now
            item.processed_count += 1
        Item.objects.bulk_update(items, ["score", "processed_at", "processed_count"])  # (4)!
    return len(items)


# --8<-- [end:batch_task]


# --8<-- [start:fan_out]
from celery import group
from celery.result import GroupResult

BATCH_SIZE = 100


def process_all(item_ids: list[int], batch_size: int = BATCH_SIZE) -> GroupResult:
    """One message per batch of ids, all batches in parallel."""
    batches = [item_ids[i : i + batch_size] for i in range(0, len(item_ids), batch_size)]  # (1)!
    return group(process_batch.s(batch) for batch in batches).apply_async()  # (2)!


# --8<-- [end:fan_out]


# --8<-- [start:chunks]
from celery import shared_task


@shared_task
def process_item(item_id: int) -> int:
    """One item: the unit that Celery's chunks() calls, many per message."""
    return process_batch([item_id])  # (1)!


def process_all_in_chunks(item_ids: list[int], chunk_size: int = BATCH_SIZE) -> GroupResult:
    """chunks(): Celery groups the calls, chunk_size per message."""
    return process_item.chunks(((i,) for i in item_ids), chunk_size).group().apply_async()  # (2)!


# --8<-- [end:chunks]


# --8<-- [start:antipattern]
def process_all_one_by_one(item_ids: list[int]) -> GroupResult:
    """ANTI-PATTERN at scale: one message (and one result) per item."""
    return group(process_item.s(i) for i in item_ids).apply_async()


# --8<-- [end:antipattern]
