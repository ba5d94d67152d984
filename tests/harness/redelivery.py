"""A redelivery as the broker makes one: the same message, with the same task id, again.

A message a worker took but never acknowledged (the worker was lost, the connection dropped,
Redis' visibility timeout ran out) is handed out again as it was: same id, same arguments.
Publishing the task again with ``task_id=`` the first delivery's id is that message on the
wire.

What the second run returned is read from the worker's INFO log (``Task <name>[<id>]
succeeded in <s>s: <repr>``, LOG_SUCCESS in ``celery/app/trace.py``), not from the result
backend: a key-value backend (Redis) never overwrites a stored SUCCESS
(``KeyValueStoreBackend._store_result``), and ``AsyncResult.get()`` answers from the backend's
cache of finished tasks besides, so both keep showing the first run's value.
"""

from __future__ import annotations

import re

from tests.harness.celery import WorkerProcess
from tests.harness.wait import wait_until


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
