"""One way to wait: poll a predicate until it holds, or fail naming what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class HasLog(Protocol):
    def log(self) -> str: ...


class WaitTimeout(TimeoutError):
    """A wait that ran out: the message names what was awaited and carries the process log."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 60,
    *,
    what: str = "",
    interval: float = 0.1,
    context: HasLog | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Return the first truthy value of ``predicate()``; raise ``WaitTimeout`` after ``timeout``.

    Deadlines are generous (the CI machine has 2 cores and runs four suites side by side): a
    proof waits for the event, never for a fixed time. ``context`` is a process whose log tail
    is attached to the error, so a timeout in CI says what the worker was doing. Exceptions in
    ``ignore`` (a server not listening yet) count as "not yet"; the last one is reported.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore as exc:
            value = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    tail = ""
    if context is not None:
        tail = f"\n--- log of {context!r} (tail) ---\n{context.log()[-4000:]}"
        if state := getattr(context, "state", None):  # a process: what its group is doing
            tail += f"\n--- its processes ---\n{state()}"
    raise WaitTimeout(f"not true after {timeout}s: {what or predicate} (last: {value!r}){tail}")
