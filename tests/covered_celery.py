"""`python -m tests.covered_celery ...` is `celery ...` with coverage in every pool child.

Coverage follows the worker subprocess, but billiard's pool children leave with os._exit, so
what a task executes there would never be saved. When the worker itself runs under coverage,
each child starts its own collector and saves after every task (a SIGKILLed child keeps what
it ran before the kill).
"""

import coverage
from celery import signals
from celery.__main__ import main

_child: list[coverage.Coverage] = []


@signals.worker_process_init.connect(weak=False)
def _start(**_kwargs: object) -> None:
    inherited = coverage.Coverage.current()
    if inherited is None:
        return  # the worker is not measured
    inherited.stop()  # the parent's collector, copied by fork: its data would be lost anyway
    cov = coverage.Coverage(data_suffix=True)
    cov.start()
    _child.append(cov)


@signals.task_postrun.connect(weak=False)
@signals.worker_process_shutdown.connect(weak=False)
def _save(**_kwargs: object) -> None:
    for cov in _child:
        cov.save()


if __name__ == "__main__":
    main()
