"""Proof for docs/troubleshooting/unregistered-tasks.md: a real prefork worker under the
recommended deployment (the session's `shared_prefork_worker`: no test here kills, stops or
reconfigures it, each waits for what it sent, and every log line read names its own task id or
a task name only these tests send), sent tasks it has never imported and tasks it has.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta

import pytest
from celery.beat import ScheduleEntry, Scheduler
from celery.exceptions import NotRegistered
from celery.utils.imports import gen_task_name

from snippets.troubleshooting import unregistered_jobs
from snippets.troubleshooting.unregistered_tasks import (
    OLD_NAME,
    build_report,
    email_invoice,
    send_invoice,
    unknown_beat_tasks,
)
from tests.harness.celery import WorkerProcess, queue_length
from tests.harness.process import ROOT
from tests.harness.redelivery import deliver_again
from tests.monitoring.helpers import tool_env

pytestmark = pytest.mark.django_db(transaction=True)

DISCARDED = "The message has been ignored and discarded."
OLD_MODULE = "billing.tasks"  # where the task lived in the previous release


def unregistered(name: str) -> str:
    """The first line Celery logs for a message naming `name` (consumer.py, UNKNOWN_TASK_ERROR)."""
    return f"Received unregistered task of type '{name}'."


CONFIRM = ROOT / "snippets/troubleshooting/unregistered_tasks.sh"


def registered_on(wp: WorkerProcess) -> str:
    """The page's "Confirm it" command, run as shown against the worker: its output."""
    body = re.search(r"\[start:confirm\]\n(.*?)# --8<-- \[end:confirm\]", CONFIRM.read_text(), re.S)
    done = subprocess.run(
        ["sh", "-c", body[1]],
        cwd=ROOT,
        env=tool_env(WORKER=wp.hostname),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{wp.hostname}: OK" in done.stdout
    return done.stdout


@pytest.mark.antipattern(task=unregistered_jobs.build_report)
def test_a_task_in_a_module_the_worker_never_imports_is_discarded(
    shared_prefork_worker, celery_app
):
    """a task defined in a module autodiscovery skips: the worker logs "Received unregistered
    task of type …", drops the message (the queue is empty, nothing is retried) and stores
    `NotRegistered` as the result."""
    worker = shared_prefork_worker
    name = unregistered_jobs.build_report.name
    assert f"* {name}\n" not in registered_on(worker)  # the "Confirm it" command
    result = unregistered_jobs.build_report.apply_async((7,), queue=worker.queue)
    log = worker.wait_for_log(unregistered(name))
    assert f"{unregistered(name)}\n{DISCARDED}" in log  # this message's record, on a shared log
    with pytest.raises(NotRegistered, match=name):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert unregistered_jobs.build_report(7) == "report 7 built"  # the code is fine: unknown only
    assert queue_length(celery_app, worker.queue) == 0  # rejected without requeue: gone


@pytest.mark.proves_idempotent(task=build_report)
def test_the_same_task_in_the_tasks_module_runs(shared_prefork_worker, celery_app):
    """the same task in the app's tasks module: registered, runs, and a redelivery of the same
    message runs it again with the same result."""
    worker = shared_prefork_worker
    assert f"* {build_report.name}\n" in registered_on(worker)
    first = build_report.apply_async((7,), queue=worker.queue)
    assert first.get(timeout=30) == "report 7 built"
    # What the second run returned, from the worker's log (.get() would show the first's).
    assert deliver_again(worker, build_report, (7,), first.id) == "report 7 built"
    assert unregistered(build_report.name) not in worker.log()


@pytest.mark.antipattern("snippets/troubleshooting/unregistered_tasks.py:rename_alias")
def test_a_message_queued_under_a_retired_name_is_discarded(shared_prefork_worker, celery_app):
    """a release renamed a task without keeping the old name: the messages the old release
    queued (or an old beat still sends) are discarded by the new worker."""
    worker = shared_prefork_worker
    retired = "billing.tasks.notify_customer"  # renamed in the release, no alias kept
    result = celery_app.send_task(retired, (9,), queue=worker.queue)
    worker.wait_for_log(unregistered(retired))
    with pytest.raises(NotRegistered):
        result.get(timeout=30)


@pytest.mark.proves_idempotent(task=email_invoice)
@pytest.mark.proves_idempotent(task=send_invoice)
def test_the_old_name_kept_as_an_alias_still_runs(shared_prefork_worker, celery_app):
    """the renamed task keeps its old name registered: a message sent by the old release runs
    the new code; redelivered, it runs again with the same result."""
    worker = shared_prefork_worker
    # What the old release's publishers send: Celery's name for its email_invoice, a plain
    # @shared_task in billing/tasks.py, i.e. its import path then.
    sent_by_old_release = gen_task_name(celery_app, email_invoice.__name__, OLD_MODULE)
    assert email_invoice.name == OLD_NAME == sent_by_old_release
    old = celery_app.send_task(sent_by_old_release, (9,), queue=worker.queue)
    assert old.get(timeout=30) == "invoice 9 sent"
    assert deliver_again(worker, email_invoice, (9,), old.id) == "invoice 9 sent"
    new = send_invoice.apply_async((9,), queue=worker.queue)
    assert new.get(timeout=30) == "invoice 9 sent"
    assert deliver_again(worker, send_invoice, (9,), new.id) == "invoice 9 sent"
    assert unregistered(OLD_NAME) not in worker.log()


def test_beat_sends_an_entry_whose_task_no_process_has(shared_prefork_worker, celery_app):
    """a schedule entry naming a task that exists nowhere (a typo, a renamed task): beat
    publishes it by name without a word, and the worker discards it as unregistered."""
    worker = shared_prefork_worker
    missing = "reports.tasks.nightly_report"
    entry = ScheduleEntry(
        name="nightly-report",
        task=missing,
        schedule=timedelta(hours=1),
        options={"queue": worker.queue},
        app=celery_app,
    )
    scheduler = Scheduler(celery_app, lazy=True)  # beat's scheduler, without its loop
    result = scheduler.apply_async(entry)  # what beat does when the entry is due
    worker.wait_for_log(unregistered(missing))
    with pytest.raises(NotRegistered):
        result.get(timeout=30)
    assert unknown_beat_tasks(celery_app) == []  # the project's own schedule: every task known
    original = celery_app.conf.beat_schedule
    celery_app.conf.beat_schedule = {**original, "nightly-report": {"task": missing}}
    try:  # the page's check, on a schedule that names the missing task
        assert unknown_beat_tasks(celery_app) == [f"nightly-report: {missing}"]
    finally:
        celery_app.conf.beat_schedule = original
