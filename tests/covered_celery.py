"""`python -m tests.covered_celery ...` is `celery ...` with coverage in every pool child.

Coverage follows the worker subprocess, but billiard's pool children leave with os._exit, so
what a task executes there would never be saved. When the worker itself runs under coverage,
each child keeps the collector it inherited and saves after every task (a SIGKILLed child keeps
what it ran before the kill) and on SIGTERM, as coverage's `sigterm = true` does in a process
it starts in.

The inherited collector, not a new one: coverage's data file notices the fork and writes under
the child's pid (coverage/sqldata.py, `_start_using`), and the child skips what a new collector
costs: building it (`Collector.__init__` records `debug.short_stack()`, which looks up the file
of every imported module) and seeing every function for the first time again. Measured (#18):
0.12 CPU-s per new collector in a process that has imported Celery and Django.
"""

import os
import signal
from types import FrameType

import coverage
from celery import signals
from celery.__main__ import main

_child: list[coverage.Coverage] = []


@signals.worker_process_init.connect(weak=False)
def _start(**_kwargs: object) -> None:
    inherited = coverage.Coverage.current()
    if inherited is None:
        return  # the worker is not measured
    _child.append(inherited)
    # billiard reset SIGTERM to its default in the child (celery/concurrency/prefork.py,
    # WORKER_SIGRESET) just before this signal: save first, then die by it as before.
    signal.signal(signal.SIGTERM, _save_then_die)


def _save_then_die(signum: int, _frame: FrameType | None) -> None:
    _save()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@signals.task_postrun.connect(weak=False)
@signals.worker_process_shutdown.connect(weak=False)
def _save(**_kwargs: object) -> None:
    for cov in _child:
        cov.save()


if __name__ == "__main__":
    main()
