"""Helpers of the error-handling proofs: the fake billing API's script, worker-loss kills,
and what the tasks recorded."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from tests.harness.wait import WaitTimeout, wait_until


@dataclass
class Reply:
    """What the fake API answers to the next POST /invoices."""

    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    create: bool = True  # create (or find) the invoice before answering, even on an error
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class BillingAPI:
    """A stand-in for an external billing API that honours Idempotency-Key like real ones do."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)  # consumed in order; then 201s
    always: Reply | None = None  # when set, the answer to every request
    requests: list[dict] = field(default_factory=list)
    invoices: dict[str, str] = field(default_factory=dict)  # idempotency key -> remote id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: dict, key: str | None) -> tuple[Reply, dict]:
        with self.lock:
            reply = self.always or (self.script.pop(0) if self.script else Reply())
            self.requests.append({"body": body, "key": key, "at": time.monotonic()})
            payload: dict = {"error": "scripted"}
            if reply.create:
                new_id = f"inv_{len(self.invoices) + 1}"
                remote_id = self.invoices.setdefault(key or new_id, new_id)
                payload = {"id": remote_id}
        return reply, payload


DOCUMENT = "<payment><amount>1200</amount><currency>EUR</currency></payment>"
POISON = "<a>" * 2000 + "</a>" * 2000  # nested too deep: parse_natively kills its process


def request_payments(*keys: str, document: str = DOCUMENT) -> None:
    """The PaymentRequest rows the worker-loss tasks read, one per key (committed: the workers
    read them)."""
    from snippets.error_handling.models import PaymentRequest

    PaymentRequest.objects.bulk_create(
        [PaymentRequest(key=key, document=document) for key in keys], ignore_conflicts=True
    )


def sigkill(pid: int) -> None:
    """SIGKILL one process by pid (a pool child): what the OOM killer does."""
    os.kill(pid, signal.SIGKILL)


def kill_the_child_running(key: str, attempt: int = 1, timeout: float = 60) -> int:
    """Wait until the `attempt`-th run of the work for `key` has started; SIGKILL its process.

    The task itself records the pid of the pool child that runs it (PaymentAttempt), so the
    kill hits exactly that child, whatever else the pool is doing. Returns the killed pid.
    """
    from snippets.error_handling.models import PaymentAttempt

    def started() -> int | None:
        pids = list(PaymentAttempt.objects.filter(key=key).order_by("pk").values_list("pid"))
        return pids[attempt - 1][0] if len(pids) >= attempt else None

    pid = wait_until(started, timeout, what=f"attempt {attempt} of {key}")
    sigkill(pid)
    return pid


def attempts(key: str) -> int:
    from snippets.error_handling.models import PaymentAttempt

    return PaymentAttempt.objects.filter(key=key).count()


def retries_seen(key: str) -> list[int]:
    """request.retries of each run of the work for `key`, in order."""
    from snippets.error_handling.models import PaymentAttempt

    return list(
        PaymentAttempt.objects.filter(key=key).order_by("pk").values_list("retries", flat=True)
    )


def payments(key: str) -> int:
    from snippets.error_handling.models import Payment

    return Payment.objects.filter(key=key).count()


def failure_records(caplog, task_id: str, at_least: int = 1) -> list[logging.LogRecord]:
    """The failure logger's records for one task.

    Celery stores the FAILURE result before it sends task_failure, so result.get() can return
    a moment before the record exists: wait for it (generously) instead of racing it.
    """

    def records() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "snippets.tasks" and getattr(r, "task_id", None) == task_id
        ]

    with contextlib.suppress(WaitTimeout):  # too few: the test's own assert says so
        wait_until(lambda: len(records()) >= at_least, 20, interval=0.05)
    time.sleep(0.2)  # a duplicate record would arrive right after: let it, so [record] sees it
    return records()
