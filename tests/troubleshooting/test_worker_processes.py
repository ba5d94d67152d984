"""Proof for docs/troubleshooting/worker-processes.md: each message read from a real prefork
worker subprocess's log (or the exception the caller gets), then the fix shown on the same
worker. One worker serves the module; the rate-limit proof adds a second one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from billiard.exceptions import WorkerLostError
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import EncodeError

from snippets.django_integration.models import Report
from snippets.django_integration.orm_patterns import archive_report, archive_report_instance
from snippets.error_handling.models import Export, Payment, PaymentAttempt
from snippets.error_handling.timeouts import export_rows, export_rows_skipping_errors
from snippets.error_handling.worker_loss import capture_payment, capture_payment_early_ack
from snippets.task_design.canvas import add
from snippets.troubleshooting.worker_processes import (
    CELERY_TASK_ANNOTATIONS,
    CELERY_TASK_ROUTES,
    PARTNER_API_WORKER,
)
from tests.configuration.helpers import settings_env
from tests.error_handling.helpers import POISON, request_payments, retries_seen
from tests.harness.celery import (
    CELERY,
    TEARDOWN,
    delete_queues,
    running_worker,
    wait_ping,
    worker_env,
)
from tests.harness.process import Process
from tests.harness.services import require_services
from tests.harness.wait import wait_until

REST = {"SNIPPETS_REST_OF_TASK_SECONDS": "3"}  # on the module's worker
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.services("broker"),
    pytest.mark.deviation(
        "SNIPPETS_REST_OF_TASK_SECONDS=3",
        reason="the module's worker: capture_payment's stand-in for the rest of its work takes "
        "3 s, so the SIGKILL finds it running; no other task here reads it",
    ),
]

SIGKILLED = "Worker exited prematurely: signal 9 (SIGKILL)"
HARD_LIMIT = "TimeLimitExceeded"
PICKLE_REFUSED = "Refusing to deserialize untrusted content of type pickle"
NOT_JSON = "is not JSON serializable"


@pytest.fixture(scope="module")
def worker(celery_app, django_db_setup, django_db_blocker, tmp_path_factory):
    """One real prefork worker (two children) shared by the module; its temp files in a
    directory of its own (the timeout proof checks what a killed task leaves behind)."""
    require_services("broker")
    with django_db_blocker.unblock():
        log_dir = tmp_path_factory.mktemp("ts-workers")
        tmp = log_dir / "tmp"
        tmp.mkdir()
        env = {"TMPDIR": str(tmp), **REST}
        with running_worker(
            celery_app,
            log_dir,
            concurrency=2,
            name=f"ts-workers-{uuid.uuid4().hex[:6]}",
            env=env,
            deviations=list(REST),  # the module's deviation mark names it
        ) as wp:
            yield wp


@pytest.mark.antipattern(task=capture_payment_early_ack)
def test_why_a_sigkilled_child_fails_the_task_with_worker_lost_error(worker):
    """The child dies mid-task: the caller gets `WorkerLostError: Worker exited prematurely:
    signal 9 (SIGKILL)`, the worker logs it; with the pattern's settings the task is retried
    and the payment is captured once."""
    request_payments("ts-lost", document=POISON)  # the document that kills its parser
    request_payments("ts-kept")
    lost = capture_payment_early_ack.apply_async(("ts-lost",), queue=worker.queue)
    with pytest.raises(WorkerLostError) as raised:
        lost.get(timeout=60)
    assert str(raised.value).startswith(SIGKILLED)
    worker.wait_for_log("exited with 'signal 9 (SIGKILL)'")
    worker.wait_for_log(f"WorkerLostError('{SIGKILLED}")
    assert not Payment.objects.filter(key="ts-lost").exists()

    kept = capture_payment.apply_async(("ts-kept",), queue=worker.queue)
    [attempt] = wait_until(
        lambda: list(PaymentAttempt.objects.filter(key="ts-kept")), what="the first attempt"
    )
    os.kill(attempt.pid, signal.SIGKILL)  # the OOM killer, say
    assert kept.get(timeout=90) == "ts-kept"  # retried in a new child, and done
    assert retries_seen("ts-kept") == [0, 1]  # the kill found it running: one retry
    assert Payment.objects.filter(key="ts-kept").count() == 1


@pytest.mark.antipattern(task=export_rows_skipping_errors)
def test_why_a_task_that_swallows_the_soft_limit_is_killed_at_the_hard_limit(worker):
    """`except Exception` eats SoftTimeLimitExceeded: the worker logs "Hard time limit (2s)
    exceeded", the caller gets `TimeLimitExceeded(2)`; the pattern stops at the soft limit."""
    export = Export.objects.create()
    killed = export_rows_skipping_errors.apply_async(
        (export.pk, 100_000), queue=worker.queue, soft_time_limit=1, time_limit=2
    )
    with pytest.raises(TimeLimitExceeded) as raised:
        killed.get(timeout=60)
    assert f"{HARD_LIMIT}(2" in repr(raised.value)
    worker.wait_for_log(
        f"Hard time limit (2s) exceeded for {export_rows_skipping_errors.name}[{killed.id}]"
    )
    export.refresh_from_db()
    os.unlink(export.partial_file)  # left behind: no cleanup ran

    export = Export.objects.create()
    stopped = export_rows.apply_async(
        (export.pk, 100_000), queue=worker.queue, soft_time_limit=1, time_limit=2
    )
    with pytest.raises(SoftTimeLimitExceeded):
        stopped.get(timeout=60)
    export.refresh_from_db()
    assert (export.status, export.partial_file) == (Export.Status.TIMED_OUT, "")  # cleaned up
    assert f"Hard time limit (2s) exceeded for {export_rows.name}[{stopped.id}]" not in (
        worker.log()
    )


def test_why_a_pickle_message_is_refused_and_json_runs(worker):
    """A sender that publishes pickle: the worker logs `ContentDisallowed: Refusing to
    deserialize untrusted content of type pickle` and runs nothing; the JSON call runs."""
    refused = add.apply_async((1, 2), queue=worker.queue, serializer="pickle")
    log = worker.wait_for_log(PICKLE_REFUSED)
    assert f"{PICKLE_REFUSED} (application/x-python-serialize)" in log
    assert add.apply_async((1, 2), queue=worker.queue).get(timeout=60) == 3
    assert refused.state == "PENDING"  # never ran
    assert f"[{refused.id}] received" not in worker.log()


@pytest.mark.antipattern(task=archive_report_instance)
def test_why_a_model_instance_argument_is_not_json_serializable(worker):
    """`.delay(report)` raises `EncodeError: Object of type Report is not JSON serializable`
    before anything is published; `.delay(report.pk)` runs on the worker."""
    report = Report.objects.create(title="ts-encode")
    with pytest.raises(EncodeError) as raised:
        archive_report_instance.apply_async((report,), queue=worker.queue)
    assert str(raised.value) == f"Object of type Report {NOT_JSON}"
    assert archive_report.apply_async((report.pk,), queue=worker.queue).get(timeout=60) is True


def test_why_rate_limit_is_per_worker_and_one_consumer_makes_it_global(
    worker, worker_process, celery_app
):
    """ "1/m" on two workers: each runs a call at once, twice the limit in the same minute
    (which worker takes which message of a shared queue does not matter: each has its own
    bucket). On one consumer (the snippet's deployment), the next call waits for a token."""
    assert CELERY_TASK_ROUTES[add.name]["queue"] == "partner-api"
    assert CELERY_TASK_ANNOTATIONS[add.name]["rate_limit"].endswith("/m")
    assert "--concurrency=1" in PARTNER_API_WORKER
    second = worker_process()
    replies = celery_app.control.rate_limit(
        add.name,
        "1/m",
        destination=[worker.hostname, second.hostname],
        reply=True,
        timeout=10,
        limit=2,
    )
    assert len(replies) == 2
    waiting = None
    try:
        both = [add.apply_async((n, 0), queue=w.queue) for n, w in ((1, worker), (2, second))]
        assert [r.get(timeout=30) for r in both] == [1, 2]  # within seconds: one per bucket

        # The module's worker alone on its queue: its bucket's one token went to the call above.
        waiting = add.apply_async((3, 0), queue=worker.queue)
        with pytest.raises(CeleryTimeoutError):
            waiting.get(timeout=3)  # one worker, one bucket: the next token is a minute away
        worker.wait_for_log(f"{add.name}[{waiting.id}] received")  # received, and held
    finally:  # the module's worker as it was: its other tests run `add`, in any order
        if waiting is not None:
            waiting.revoke()
        celery_app.control.rate_limit(
            add.name, "0", destination=[worker.hostname], reply=True, timeout=10
        )


@pytest.mark.deviation(
    "argv=the snippet's PARTNER_API_WORKER (celery -A snippets.project worker "
    "--queues=partner-api --concurrency=1 --hostname=partner-api@%h)",
    reason="the worker the snippet deploys, started as written, not the unit's ExecStart",
)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(snippets.project.settings, the snippet's "
    "CELERY_TASK_ROUTES and CELERY_TASK_ANNOTATIONS)",
    reason="the snippet's settings, over the project's",
)
def test_the_snippet_s_partner_api_worker_runs_the_routed_calls_at_its_rate(celery_app, tmp_path):
    """The snippet as deployed: its PARTNER_API_WORKER command line (the harness's own flags
    left out) with its routes and annotations. Two calls sent with no queue reach that worker
    alone; the second runs a token later (10/m: 6 s), on a pool of one process."""
    executable, *args = PARTNER_API_WORKER
    assert shutil.which(executable, path=str(Path(sys.executable).parent))  # the venv's celery
    queue = CELERY_TASK_ROUTES[add.name]["queue"]
    delete_queues(celery_app, queue)  # nothing left over from an earlier run
    env = settings_env(
        CELERY_TASK_ROUTES=CELERY_TASK_ROUTES, CELERY_TASK_ANNOTATIONS=CELERY_TASK_ANNOTATIONS
    )
    wp = Process.spawn(
        [*CELERY, *args], log_path=tmp_path / "partner-api.log", env=worker_env(**env)
    )
    hostname = f"partner-api@{socket.gethostname()}"
    try:
        wait_ping(celery_app, hostname, proc=wp)
        stats = celery_app.control.inspect([hostname], timeout=5).stats()
        assert stats[hostname]["pool"]["max-concurrency"] == 1
        web = Celery("snippets", set_as_current=False)  # a web process with the snippet's routes
        web.config_from_object("snippets.project.settings", namespace="CELERY")
        web.conf.task_routes = CELERY_TASK_ROUTES
        calls = [web.send_task(add.name, (n, 0)) for n in (1, 2)]  # no queue named: routed
        assert [r.get(timeout=60) for r in calls] == [1, 2]
        first, second = (r.date_done for r in calls)
        assert second - first >= timedelta(seconds=5)  # one token every 6 s
    finally:
        wp.stop(signal.SIGTERM, timeout=20, escalate=TEARDOWN)
        delete_queues(celery_app, queue)
