"""Proof for docs/monitoring/logging.md: what a real worker writes under each configuration."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta

import pytest
from django.conf import settings

from snippets.monitoring.logging import import_rows
from tests.harness.process import ROOT, fresh_python
from tests.harness.redelivery import redeliver
from tests.monitoring.logging_probe_settings import BUILT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services("broker")]
JSON_SETTINGS = "snippets.monitoring.json_logging.settings"
PROBE_SETTINGS = "tests.monitoring.logging_probe_settings"
CELERY_FORMAT = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+: (INFO|WARNING|ERROR)/")


def run_and_read_log(
    worker_process, app: str, settings: str, redelivered: bool = False
) -> tuple[list[str], str, str]:
    """Run one good and one failing import on a worker; return its log lines and the two ids.

    `redelivered`: the good one is delivered a second time (the same id and headers) after the
    failing one ended, and must give the same result.
    """
    wp = worker_process(app=app, env={"DJANGO_SETTINGS_MODULE": settings})
    good = import_rows.apply_async((3,), queue=wp.queue, headers={"x_request_id": "req-42"})
    bad = import_rows.apply_async((-1,), queue=wp.queue, headers={"x_request_id": "req-43"})
    assert good.get(timeout=30) == 3
    with pytest.raises(ValueError, match="no batch -1"):
        bad.get(timeout=30)
    log = wp.wait_for_log(f"{bad.id}] raised unexpected")
    if redelivered:
        again = redeliver(wp, import_rows, good, (3,), headers={"x_request_id": "req-42"})
        assert (again["status"], again["result"]) == ("SUCCESS", 3)
        log = wp.log()
    return log.splitlines(), good.id, bad.id


def json_entries(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


JSON_APP = pytest.mark.deviation(
    "-A snippets.monitoring.json_logging.celery",
    reason="the page's app, with setup_logging connected",
)


@pytest.mark.proves_idempotent(task=import_rows)
@JSON_APP
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=snippets.monitoring.json_logging.settings",
    reason="the page's JSON LOGGING",
)
def test_with_setup_logging_connected_every_log_line_is_django_json(worker_process):
    """no line in Celery's format; the task's line is JSON with its logger, a `ForkPoolWorker`
    process, the task id, name and `req-42`; the failure is an `ERROR` with the traceback and
    `req-43`; the `ready` line has `task_id: null`. Delivered again (the same id), the task
    gives the same result and logs the same task id and correlation id a second time."""
    lines, good, bad = run_and_read_log(
        worker_process, "snippets.monitoring.json_logging.celery", JSON_SETTINGS, redelivered=True
    )
    assert not [line for line in lines if CELERY_FORMAT.match(line)]  # no Celery-format line
    entries = json_entries(lines)
    [mine, again] = [e for e in entries if e["message"] == "imported batch 3"]
    assert {k: again[k] for k in ("task_id", "task_name", "correlation_id")} == {
        k: mine[k] for k in ("task_id", "task_name", "correlation_id")
    }
    assert mine == {
        **mine,
        "level": "INFO",
        "logger": "snippets.monitoring.logging",
        "task_id": good,
        "task_name": import_rows.name,
        "correlation_id": "req-42",
        "batch": 3,  # the call's extra={...}
    }
    assert mine["process"].startswith("ForkPoolWorker")
    assert datetime.fromisoformat(mine["time"]).utcoffset() == timedelta(0)  # ISO 8601, UTC
    [failure] = [
        e for e in entries if e["message"].startswith(f"Task {import_rows.name}[{bad}] raised")
    ]
    assert failure["level"] == "ERROR"
    assert failure["correlation_id"] == "req-43"
    assert "ValueError: no batch -1" in failure["exc_info"]
    assert any(e["message"].endswith(" ready.") and e["task_id"] is None for e in entries)


@JSON_APP
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=tests.monitoring.logging_probe_settings",
    reason="the page's JSON LOGGING, its handler built by a factory that says so on stderr",
)
def test_the_worker_applies_logging_twice_and_writes_each_line_once(worker_process):
    """LOGGING is applied twice before the worker's first line: by `django.setup()`, then by the
    receiver. The second application replaces the handler the first built, so the `ready` line
    and the task's line are each written once, as JSON."""
    lines, good, _bad = run_and_read_log(
        worker_process, "snippets.monitoring.json_logging.celery", PROBE_SETTINGS
    )
    built = [n for n, line in enumerate(lines) if line == BUILT]
    first_json = next(n for n, line in enumerate(lines) if line.startswith("{"))
    assert len(built) == 2  # Django's dictConfig, then the receiver's
    assert built[-1] < first_json  # both before anything was logged
    entries = json_entries(lines)
    assert len([e for e in entries if e["message"].endswith(" ready.")]) == 1
    [mine] = [e for e in entries if e["message"] == "imported batch 3"]
    assert (mine["task_id"], mine["logger"]) == (good, "snippets.monitoring.logging")


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=snippets.monitoring.json_logging.settings",
    reason="the page's JSON LOGGING, under the default hijack",
)
def test_why_the_default_hijack_throws_django_logging_away(worker_process):
    """The same LOGGING, the project's plain app: Celery replaces the root handler."""
    lines, good, _bad = run_and_read_log(worker_process, "snippets.project", JSON_SETTINGS)
    assert json_entries(lines) == []  # Django's JSON handler is gone
    [mine] = [line for line in lines if line.endswith("imported batch 3")]
    assert CELERY_FORMAT.match(mine)
    assert f"{import_rows.name}[{good}]: imported batch 3" in mine  # Celery's task format
    assert "req-42" not in "\n".join(lines)  # no correlation id anywhere


@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=snippets.monitoring.json_logging.settings_no_hijack",
    reason="the page's JSON LOGGING with worker_hijack_root_logger=False",
)
def test_why_hijack_false_keeps_the_root_handler_but_not_the_task_logger(worker_process):
    """worker_hijack_root_logger=False: worker lines are JSON, task-logger lines are not."""
    lines, good, _bad = run_and_read_log(
        worker_process, "snippets.project", "snippets.monitoring.json_logging.settings_no_hijack"
    )
    entries = json_entries(lines)
    assert any(e["message"].endswith(" ready.") for e in entries)  # root: Django's JSON
    assert not [e for e in entries if e["message"] == "imported batch 3"]
    [mine] = [line for line in lines if line.endswith("imported batch 3")]
    assert CELERY_FORMAT.match(mine)  # celery.task: Celery's own handler, propagate off
    assert f"[{good}]: imported batch 3" in mine


LOGGING_SETUP = """
import logging
import django
from snippets.monitoring.json_logging.celery import app  # what `celery -A` imports
django.setup()  # on the settings the app module chose: LOGGING applied once
app.log.setup(loglevel="INFO")  # the worker's call: setup_logging sent, the receiver runs
# kombu's INFO line when a Redis channel closes with deliveries unacked
# (kombu/transport/virtual/base.py:299), and a kombu warning:
logging.getLogger("kombu.transport.virtual.base").info("Restoring 1 unacknowledged message(s)")
logging.getLogger("kombu.connection").warning("No hostname was supplied.")
logging.getLogger("celery.worker.consumer").info("Connected")
print(app.conf.task_acks_late, app.conf.task_time_limit)  # the project's CELERY_ settings
"""


@JSON_APP
def test_kombu_keeps_its_warnings_but_not_its_info_lines():
    """The app module alone selects the page's settings and reads their CELERY_ names; under
    their LOGGING and the receiver, what kombu logs below WARNING stays out of the JSON stream;
    its warnings, and Celery's INFO lines, are written."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the app module names the page's settings
    done = fresh_python(LOGGING_SETUP, env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(settings.CELERY_TASK_ACKS_LATE),
        str(settings.CELERY_TASK_TIME_LIMIT),
    ]
    entries = json_entries(done.stderr.splitlines())
    assert [(e["logger"], e["level"], e["message"]) for e in entries] == [
        ("kombu.connection", "WARNING", "No hostname was supplied."),
        ("celery.worker.consumer", "INFO", "Connected"),
    ]
