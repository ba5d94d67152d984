"""A redelivery as the broker makes one: the same message, with the same task id, again.

A message a worker took but never acknowledged (the worker was lost, the connection dropped,
Redis' visibility timeout ran out) is handed out again as it was: same id, same arguments.
Publishing the task again with ``task_id=`` the first delivery's id is that message on the
wire. Rule 2 of the checklist (tests/test_checklist.py) accepts such a proof, or a kill.

The second run's outcome is not what ``AsyncResult.get()`` shows: a key-value result backend
(Redis) never overwrites a stored SUCCESS (``celery/backends/base.py``,
``BaseKeyValueStoreBackend._store_result``), and ``get()`` answers from the backend's cache of
finished tasks besides. So there are two ways to read it here:

- :func:`redeliver` forgets the first run's result before it publishes again, then waits for
  the result the second run stores, read afresh;
- :func:`outcomes` and :func:`wait_succeeded` read each run's end from the worker's INFO log
  (``Task <name>[<id>] succeeded in <s>s: <repr>``, LOG_SUCCESS in ``celery/app/trace.py``),
  for a proof that keeps the first result or counts the runs; :func:`deliver_again` is the
  redelivery on top of them, and returns the value the second run logged.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from celery import states

from tests.harness.celery import WorkerProcess
from tests.harness.wait import wait_until


def redeliver(
    wp: WorkerProcess,
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


def outcomes(wp: WorkerProcess, task_id: str) -> list[str]:
    """How each run of `task_id` ended, as the worker logged it: the repr of what a run that
    succeeded returned, or "raised ..." for one that failed."""
    ended = rf"\[{re.escape(task_id)}\] (?:succeeded in [^:]*: (.*)|(raised .*))$"
    return [value or error for value, error in re.findall(ended, wp.log(), re.M)]


def wait_succeeded(wp: WorkerProcess, task_id: str, runs: int, timeout: float = 60) -> list[str]:
    """Until `runs` runs of `task_id` have ended; each must have succeeded. Returns the repr of
    what each run returned, in order."""

    def ended_runs() -> list[str] | None:
        found = outcomes(wp, task_id)
        return found if len(found) >= runs else None

    ended = wait_until(ended_runs, timeout, what=f"{runs} runs of {task_id} to end", context=wp)
    failed = [outcome for outcome in ended if outcome.startswith("raised ")]
    assert not failed, f"{task_id}: {failed}\n{wp.log()[-4000:]}"
    return ended


def received(wp: WorkerProcess, task: Any) -> list[str]:
    """The ids of `task`'s messages the worker received, in order (a redelivery repeats one)."""
    return re.findall(rf"Task {re.escape(task.name)}\[([\w-]+)\] received", wp.log())


def deliver_again(
    wp: WorkerProcess,
    task: Any,
    args: tuple,
    task_id: str,
    timeout: float = 60,
    **options: Any,
) -> object:
    """Deliver `task_id`'s message to `wp` once more, wait for that run to end, and return what
    it returned (the value the worker logged). The first delivery must have ended: its result
    is stored a moment before the worker logs its end, so this waits for that line first.
    `options` are the rest of the first message's (`group_id`, `group_index`, `chord` of a
    chord member), so the copy carries them as the broker's would."""
    done = len(
        wait_until(
            lambda: outcomes(wp, task_id),
            timeout,
            what=f"the end of the first run of {task.name}[{task_id}] in the log",
            context=wp,
        )
    )
    task.apply_async(args, task_id=task_id, queue=wp.queue, **options)  # as on the wire
    ended = wait_until(
        lambda: (found := outcomes(wp, task_id))[done:] and found,
        timeout,
        what=f"the second run of {task.name}[{task_id}]",
        context=wp,
    )
    again = ended[done]  # the first run may have failed (a declined charge); this one may not
    assert not again.startswith("raised "), (
        f"{task_id} delivered again: {again}\n{wp.log()[-4000:]}"
    )
    return ast.literal_eval(again)  # the worker logs the value's repr
