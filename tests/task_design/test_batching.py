"""Proof for docs/task-design/batching.md: every item once, a failing batch loses no other."""

import pytest

from snippets.task_design.batching import (
    BATCH_SIZE,
    process_all,
    process_all_in_chunks,
    process_all_one_by_one,
    process_batch,
    process_item,
)
from snippets.task_design.models import Item
from tests.harness.redelivery import deliver_again

pytestmark = pytest.mark.django_db(transaction=True)


def make_items(n: int, bad: set[int] = frozenset()) -> list[int]:
    Item.objects.bulk_create(Item(value=-1 if i in bad else i) for i in range(n))
    return list(Item.objects.order_by("pk").values_list("pk", flat=True))


def counts() -> dict[int, int]:
    """processed_count -> how many items have it."""
    result: dict[int, int] = {}
    for count in Item.objects.values_list("processed_count", flat=True):
        result[count] = result.get(count, 0) + 1
    return result


def test_batches_process_every_item_exactly_once(celery_worker, published):
    """250 items in 3 batches: every `processed_count` is 1, every `score` twice its value, and a
    batch delivered again processes 0."""
    ids = make_items(250)
    result = process_all(ids, batch_size=100)
    assert sorted(result.get(timeout=60)) == [50, 100, 100]
    assert counts() == {1: 250}  # every item, once
    assert sorted(Item.objects.values_list("value", "score")) == [(v, 2 * v) for v in range(250)]
    assert len([p for p in published if p["name"] == process_batch.name]) == 3  # 3 messages

    # A batch delivered again (a redelivery, a retry) finds nothing left to do.
    assert process_batch.delay(ids[:100]).get(timeout=30) == 0
    assert counts() == {1: 250}


@pytest.mark.proves_idempotent(task=process_batch)
@pytest.mark.proves_idempotent(task=process_item)
def test_a_batch_or_an_item_delivered_again_processes_nothing_again(shared_prefork_worker):
    """On a prefork worker: a batch of 10 and a single item, each delivered again with its
    task id (a redelivery): the second run processes 0, every `processed_count` stays 1 and
    every `processed_at` keeps its first value. Without `processed_at__isnull=True` the second
    run would process them again."""
    wp = shared_prefork_worker
    ids = make_items(12)
    batch = process_batch.apply_async((ids[:10],), queue=wp.queue)
    item = process_item.apply_async((ids[10],), queue=wp.queue)
    assert (batch.get(timeout=30), item.get(timeout=30)) == (10, 1)
    first = dict(Item.objects.values_list("pk", "processed_at"))

    assert deliver_again(wp, process_batch, (ids[:10],), batch.id) == 0
    assert deliver_again(wp, process_item, (ids[10],), item.id) == 0
    assert counts() == {1: 11, 0: 1}  # the twelfth item was never asked for
    assert dict(Item.objects.values_list("pk", "processed_at")) == first


def test_a_failing_batch_does_not_lose_the_others(celery_worker):
    """50 items, batches of 10, one bad item: the third batch fails and its ten items stay
    unprocessed (rolled back); the other 40 are processed once."""
    ids = make_items(50, bad={23})  # the 24th item is bad: it sits in the third batch of 10
    result = process_all(ids, batch_size=10)
    result.join(timeout=60, propagate=False)

    states = [r.state for r in result.results]
    assert states == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS", "SUCCESS"]
    assert "negative value" in str(result.results[2].result)
    third = ids[20:30]
    assert not Item.objects.filter(pk__in=third, processed_at__isnull=False).exists()  # rolled back
    assert Item.objects.exclude(pk__in=third).filter(processed_count=1).count() == 40


def test_chunks_process_every_item_exactly_once(celery_worker, published):
    """30 items in 3 `celery.starmap` messages."""
    ids = make_items(30)
    result = process_all_in_chunks(ids, chunk_size=10)
    assert [sum(chunk) for chunk in result.get(timeout=60)] == [10, 10, 10]
    assert counts() == {1: 30}
    assert len([p for p in published if p["name"] == "celery.starmap"]) == 3


def test_why_one_task_per_item_costs_one_message_per_item(celery_worker, published):
    """200 messages against 2."""
    ids = make_items(2 * BATCH_SIZE)
    result = process_all_one_by_one(ids)
    assert result.get(timeout=120) == [1] * len(ids)
    assert counts() == {1: len(ids)}
    per_item = len([p for p in published if p["name"] == process_item.name])
    published.clear()
    Item.objects.update(processed_at=None, processed_count=0)
    process_all(ids).get(timeout=60)
    per_batch = len([p for p in published if p["name"] == process_batch.name])
    assert (per_item, per_batch) == (200, 2)  # 100 times the messages, results, round trips
