"""Proof for docs/project.md: the project's Celery settings, as the page shows them, behave.

The worker-loss and missing-variable proofs run a worker started with the project settings
and nothing else: the tasks in snippets/project/tasks.py set no delivery option of their own.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from billiard.exceptions import WorkerLostError
from celery import Celery
from celery.app.defaults import NAMESPACES, flatten
from celery.contrib.django.task import DjangoTask
from django.conf import settings

from snippets.project.tasks import crash_every_time, crash_every_time_requeued
from tests.harness.celery import worker_env
from tests.harness.process import ROOT
from tests.harness.wait import wait_until

INCLUDE = ["--include=snippets.project.tasks"]  # the worker imports the proof's tasks


def test_every_celery_setting_is_one_celery_knows():
    """Known: Celery's settings, and the one the Django fixup reads on its own (docs:
    orm-patterns.md recommends it; it is not in celery.app.defaults)."""
    from celery.fixups.django import DjangoWorkerFixup

    assert "'CELERY_DB_REUSE_MAX'" in inspect.getsource(DjangoWorkerFixup.__init__)
    known = {f"CELERY_{name.upper()}" for name, _opt in flatten(NAMESPACES)}
    known.add("CELERY_DB_REUSE_MAX")
    ours = {name for name in dir(settings) if name.startswith("CELERY_")}
    assert ours, "no CELERY_ settings found"
    assert ours - known == set()


def test_json_only_and_time_limits_below_the_visibility_timeout(celery_app):
    conf = celery_app.conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.accept_content == conf.result_accept_content == ["json"]
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility
    assert conf.task_acks_late
    assert conf.worker_prefetch_multiplier == 1


def test_the_default_task_class_is_djangotask(celery_app):
    from snippets.django_integration.transactions import render_report

    assert isinstance(render_report, DjangoTask)
    assert hasattr(render_report, "delay_on_commit")


def test_the_result_backend_ignores_a_visibility_timeout():
    """Why the page sets no CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS visibility_timeout: Celery
    5.7 never reads one (the Redis result backend takes retry_policy, sentinel and
    connection-error options from it); the broker's option is the one that redelivers."""
    import celery

    sources = Path(celery.__file__).parent.rglob("*.py")
    assert not [p for p in sources if "visibility_timeout" in p.read_text()]


def run_without(*names: str) -> subprocess.CompletedProcess:
    """`celery worker` as a deploy starts it, with the named variables missing."""
    env = {k: v for k, v in worker_env().items() if k not in names}
    cmd = [sys.executable, "-m", "celery", "-A", "snippets.project", "worker", "--pool=solo"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_a_missing_service_variable_stops_the_worker_at_startup(name):
    run = run_without(name)
    assert run.returncode != 0
    assert f"ImproperlyConfigured: {name} is not set in the environment" in run.stderr


def test_why_a_memory_fallback_publishes_into_nothing(monkeypatch):
    """The fallback this page used to show: with the variable missing, delay() still returns
    an id and raises nothing, and the message sits in this process's memory, where no worker
    in another process will ever read it."""
    monkeypatch.delenv("CELERY_BROKER_URL")
    broker_url = os.environ.get("CELERY_BROKER_URL", "memory://")  # the old line
    app = Celery("fallback", broker=broker_url, set_as_current=False)
    sent = app.send_task("snippets.anything", queue="orders")
    assert sent.id  # "sent", as far as the caller can tell
    with app.connection_for_read() as conn:
        assert conn.transport_cls == "memory"
        assert conn.default_channel.queue_declare("orders", passive=True).message_count == 1


def attempts(path: Path) -> list[int]:
    return [int(n) for n in path.read_text().split()] if path.exists() else []


@pytest.mark.services("broker")
@pytest.mark.antipattern(task=crash_every_time)  # a poison message, deliberately
@pytest.mark.deviation("--include", reason="the tasks of this proof, in snippets/project/tasks.py")
def test_a_task_that_kills_its_worker_every_time_fails_after_its_retries(worker_process, tmp_path):
    """Project settings only: acks_late + task_retry_on_worker_lost. The poison message runs
    once and is retried max_retries (3) times, then ends FAILURE: the queue is free again."""
    wp = worker_process(args=INCLUDE)
    path = tmp_path / "attempts"
    result = crash_every_time.apply_async((str(path),), queue=wp.queue)
    with pytest.raises(WorkerLostError):
        result.get(timeout=120, propagate=True)
    assert attempts(path) == [0, 1, 2, 3]
    assert result.state == "FAILURE"


@pytest.mark.antipattern(task=crash_every_time_requeued)
@pytest.mark.services("broker")
@pytest.mark.deviation("--include", reason="the tasks of this proof, in snippets/project/tasks.py")
def test_why_reject_on_worker_lost_requeues_the_poison_forever(worker_process, tmp_path):
    """The setting this project used to apply to every task: the same poison is requeued on
    every death, never with a growing retry count, never a result."""
    wp = worker_process(args=INCLUDE)
    path = tmp_path / "attempts"
    result = crash_every_time_requeued.apply_async((str(path),), queue=wp.queue)
    wait_until(lambda: len(attempts(path)) > 5, timeout=120, what="a sixth run", context=wp)
    assert set(attempts(path)) == {0}  # always the first try, as far as the task knows
    assert not result.ready()
