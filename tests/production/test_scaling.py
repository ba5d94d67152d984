"""Proof for docs/production/scaling.md: queues per workload, and pool children recycled."""

from __future__ import annotations

import shlex
from pathlib import Path

import psutil
import pytest
from celery import Celery

from snippets.production.scaling import build_report, child_pid, send_receipt
from tests.harness.celery import delete_queues, wait_ping
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until
from tests.production.helpers import HOST, SNIPPETS, celery_argv, prod_env

pytestmark = pytest.mark.django_db(transaction=True)


def worker_lines() -> list[str]:
    """The `celery ... worker` command lines of snippets/production/scaling.sh."""
    text = (SNIPPETS / "scaling.sh").read_text()
    return [line for line in text.splitlines() if line.startswith("celery ")]


def hostname_of(line: str) -> str:
    """The node name a command line's --hostname=name@%h expands to on this machine."""
    [option] = [a for a in shlex.split(line) if a.startswith("--hostname=")]
    return option.removeprefix("--hostname=").replace("%h", HOST)


def finished(log: Path) -> list[str]:
    """The jobs that noted their work in the order log, in order (each line: job, task id)."""
    return [line.split()[0] for line in log.read_text().splitlines()]


def pids_of(queue: str, leaks: list[int]) -> list[int]:
    """Run child_pid once per entry of `leaks`, one after the other; the pids that ran them."""
    return [child_pid.apply_async((mib,), queue=queue).get(timeout=60) for mib in leaks]


@pytest.mark.services("broker")
@pytest.mark.deviation("CELERY_MAX_TASKS_PER_CHILD=3", reason="1000 on the page; 3 to see it")
@pytest.mark.deviation(
    "CELERY_MAX_MEMORY_PER_CHILD=180000", reason="above a fresh child, below one that leaked"
)
def test_recycling_replaces_the_child_and_loses_nothing(worker_process):
    """Both limits of the page, on one worker: 3 tasks per child, ~176 MiB per child."""
    limit_kib = 180_000  # above a fresh child, below one that leaked 200 MiB
    wp = worker_process(
        env=prod_env(CELERY_MAX_TASKS_PER_CHILD="3", CELERY_MAX_MEMORY_PER_CHILD=str(limit_kib))
    )
    [child] = wp.pool_pids()
    assert psutil.Process(child).memory_info().rss / 1024 < limit_kib  # a fresh child is under

    pids = pids_of(wp.queue, [0, 200, 0, 0, 0, 0])

    # the leaking task crossed the memory limit, still completed, then its child was replaced
    assert pids[0] == pids[1] == child
    # the next child ran its 3 tasks, then was replaced too
    assert pids[2] == pids[3] == pids[4] != child
    assert pids[5] not in {child, pids[2]}  # six tasks, six results: nothing lost


@pytest.mark.antipattern("snippets/production/scaling.py:leak")
@pytest.mark.antipattern(task=child_pid)  # the leak is deliberate: it is what recycling cures
@pytest.mark.services("broker")
@pytest.mark.deviation("CELERY_MAX_MEMORY_PER_CHILD=0", reason="the anti-pattern: no limit")
def test_why_without_a_limit_the_leaking_child_keeps_its_memory(worker_process):
    """The anti-pattern: no limit (0 turns it off), so the leaked memory stays in the child."""
    wp = worker_process(env=prod_env(CELERY_MAX_MEMORY_PER_CHILD="0"))
    [child] = wp.pool_pids()

    assert pids_of(wp.queue, [200, 0]) == [child, child]
    assert psutil.Process(child).memory_info().rss > 200 * 1024 * 1024  # and it never goes back


@pytest.mark.parametrize("task", [build_report, send_receipt], ids=["build_report", "send_receipt"])
def test_each_job_has_its_own_finite_limits_below_the_visibility_timeout(celery_app, task):
    """Verify: the slow job's own 60/90 s (and the fast one's 10/20 s), soft before hard, both
    below the visibility timeout: recycling happens only between tasks, so a runaway task needs
    its limit (the proofs here finish in seconds, far from either)."""
    visibility = celery_app.conf.broker_transport_options["visibility_timeout"]
    assert 0 < task.soft_time_limit < task.time_limit < visibility


def wait_started(result, timeout: float = 60) -> None:
    """Wait until the worker reports the task STARTED (task_track_started is on)."""
    wait_until(lambda: result.state == "STARTED", timeout, what=f"{result.id} STARTED")


def production_app() -> Celery:
    """A publisher configured like production (its task_routes), on the test's broker."""
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("snippets.production.settings", namespace="CELERY")
    return app


@pytest.mark.services("broker")
def test_one_queue_per_workload_a_fast_task_does_not_wait_behind_a_slow_one(
    run_command, tmp_path, celery_app
):
    """The two worker lines of scaling.sh; the routes of the production settings."""
    release, log = tmp_path / "release", tmp_path / "order.log"
    env = prod_env()
    workers = [run_command(celery_argv(line), env=env) for line in worker_lines()]
    try:
        for line, proc in zip(worker_lines(), workers, strict=True):
            wait_ping(celery_app, hostname_of(line), proc=proc)
        app = production_app()
        report = app.send_task(build_report.name, args=[str(release), str(log)])
        receipt = app.send_task(send_receipt.name, args=[str(log)])

        wait_started(report)
        assert receipt.get(timeout=60) == "receipt"  # while the report is still running
        assert finished(log) == ["send_receipt"]
        release.touch()  # released: it ends at its next look, long before its 55 s deadline
        assert report.get(timeout=30) == "report"
        assert finished(log) == ["send_receipt", "build_report"]
    finally:
        delete_queues(celery_app, "fast", "slow")


@pytest.mark.antipattern("snippets/production/scaling.py:tasks")
@pytest.mark.proves_idempotent(task=build_report)
@pytest.mark.proves_idempotent(task=send_receipt)
@pytest.mark.services("broker")
def test_why_one_queue_for_everything_makes_the_fast_task_wait(worker_process, tmp_path):
    """The anti-pattern: both kinds on one queue; every slot is busy with a slow job.

    Then each message delivered again (the same id): the same result and no second line in the
    order log (without the task-id check in `_log`, each would note its work twice)."""
    release, log = tmp_path / "release", tmp_path / "order.log"
    wp = worker_process(concurrency=1)
    report = build_report.apply_async((str(release), str(log)), queue=wp.queue)
    receipt = send_receipt.apply_async((str(log),), queue=wp.queue)
    wait_started(report)  # it holds the only slot

    release.touch()  # the report may finish now: only then does the receipt get a slot
    assert receipt.get(timeout=60) == "receipt"
    assert report.get(timeout=60) == "report"
    assert finished(log) == ["build_report", "send_receipt"]

    again = redeliver(wp, send_receipt, receipt, (str(log),))
    assert (again["status"], again["result"]) == ("SUCCESS", "receipt")
    again = redeliver(wp, build_report, report, (str(release), str(log)))
    assert (again["status"], again["result"]) == ("SUCCESS", "report")
    assert finished(log) == ["build_report", "send_receipt"]
