"""A message delivered again to a worker subprocess, and what the worker's log says of each run.

A broker that lost a message's acknowledgement (a dead worker, an expired visibility timeout, a
closed channel) delivers the same message again: same task, same arguments, same task id.
:func:`deliver_again` publishes exactly that to the worker that ran the first delivery, waits
for the second run to end and returns what that run returned. Both come from the worker's log,
not from the result backend: the backend keeps the first run's SUCCESS under that id (Celery
never overwrites a SUCCESS: ``_store_result`` in ``celery/backends/base.py``), so ``.get()``
neither waits for the second run nor shows its answer.
"""

from __future__ import annotations

import ast
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
) -> object:
    """Deliver `task_id`'s message to `wp` once more, wait for that run to end, and return what
    it returned (the value the worker logged). The first delivery must have ended: its result
    is stored a moment before the worker logs its end, so this waits for that line first."""
    done = wait_until(
        lambda: len(ends(wp, task, task_id)),
        timeout,
        what=f"the end of the first run of {task.name}[{task_id}] in the log",
        context=wp,
    )
    task.apply_async(args, task_id=task_id, queue=wp.queue)  # a redelivery, as on the wire
    runs = wait_until(
        lambda: (found := ends(wp, task, task_id))[done:] and found,
        timeout,
        what=f"the second run of {task.name}[{task_id}]",
        context=wp,
    )
    succeeded = re.fullmatch(r"succeeded in \S+s: (.*)", runs[done])
    assert succeeded, f"{task.name}[{task_id}] delivered again: {runs[done]}\n{wp.log()[-4000:]}"
    return ast.literal_eval(succeeded[1])  # the worker logs the value's repr
