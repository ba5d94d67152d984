"""A message delivered again to a worker subprocess, and what the worker's log says of each run.

A broker that lost a message's acknowledgement (a dead worker, an expired visibility timeout, a
closed channel) delivers the same message again: same task, same arguments, same task id.
:func:`deliver_again` publishes exactly that to the worker that ran the first delivery and
waits for the second run to end. It waits on the worker's log, not on ``.get()``: the result
backend already holds the first run's result under that id, so ``.get()`` would not wait.
"""

from __future__ import annotations

import re

from tests.harness.celery import WorkerProcess
from tests.harness.wait import wait_until

# How Celery logs the end of a run (celery/app/trace.py: LOG_SUCCESS, LOG_FAILURE, LOG_IGNORED,
# LOG_RETRY, LOG_INTERNAL_ERROR), each after the result was stored.
ENDINGS = ("succeeded in", "raised unexpected", "raised expected", "ignored", "retry:", "INTERNAL")


def received(wp: WorkerProcess, task: object) -> list[str]:
    """The ids of `task`'s messages the worker received, in order (a redelivery repeats one)."""
    return re.findall(rf"Task {re.escape(task.name)}\[([\w-]+)\] received", wp.log())


def ends(wp: WorkerProcess, task: object, task_id: str) -> list[str]:
    """How each run of `task_id` ended, as the worker logged it (`succeeded in 0.01s: 3`...)."""
    endings = "|".join(map(re.escape, ENDINGS))
    run = rf"Task {re.escape(task.name)}\[{re.escape(task_id)}\] ((?:{endings}).*)$"
    return re.findall(run, wp.log(), re.M)


def deliver_again(
    wp: WorkerProcess, task: object, args: tuple, task_id: str, timeout: float = 60
) -> tuple[str, object]:
    """Deliver `task_id`'s message to `wp` once more, wait for that run to end, and return the
    state and result it stored (they replace the first run's)."""
    done = len(ends(wp, task, task_id))
    task.apply_async(args, task_id=task_id, queue=wp.queue)  # a redelivery, as on the wire
    wait_until(
        lambda: len(ends(wp, task, task_id)) > done,
        timeout,
        what=f"the second run of {task.name}[{task_id}]",
        context=wp,
    )
    meta = task.backend.get_task_meta(task_id, cache=False)
    return meta["status"], meta["result"]
