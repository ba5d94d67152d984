"""A redelivery, as the broker makes one: the same message (the same task id) delivered again.

Rule 2 of the checklist (tests/test_checklist.py) asks each task that can run twice for a proof
that kills it or delivers it again on a worker subprocess. :func:`redeliver` is the second kind:
it publishes the task again with the first delivery's id, to the same worker, and waits until
that second run has stored its result, so the proof then reads the effects of both runs.

The first run's stored result is forgotten first: a key-value result backend never overwrites
a SUCCESS (celery/backends/base.py, ``BaseKeyValueStoreBackend._store_result``), so without
that the second run's result could not be told from the first's, nor its end be waited for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import states

from tests.harness.wait import wait_until


def redeliver(
    wp: Any,
    task: Any,
    first: Any,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> dict:
    """Deliver `first`'s task again to worker `wp`, with `first.id`; wait until that run ended.

    Returns the result meta the second run stored (``status``, ``result``), read afresh.
    """
    first.forget()
    task.apply_async(args, kwargs, task_id=first.id, queue=wp.queue, **options)

    def stored() -> dict | None:
        meta = first.backend.get_task_meta(first.id, cache=False)
        return meta if meta["status"] in states.READY_STATES else None

    return wait_until(stored, what=f"the redelivered {task.name}[{first.id}] ended", context=wp)
