"""Proof for docs/django-integration/testing.md: the page's example tests run here as shown."""

import importlib.metadata
import os
import subprocess
import sys

import pytest
from celery.contrib.testing.app import DEFAULT_TEST_CONFIG
from django.db import transaction
from django.test import override_settings

from snippets.django_integration.models import Report
from snippets.django_integration.testing import (
    eager_test_of_a_publish_before_commit,
    test_a_rate_limited_push_asks_to_retry_after_the_servers_delay,
    test_a_real_worker_renders_a_committed_report,
    test_a_transient_error_is_retried_until_it_succeeds,
    test_create_report_enqueues_one_render_on_commit,
    test_render_report_renders_once,
    worker_test_under_plain_db,
)
from snippets.django_integration.transactions import create_report_too_early, render_report
from snippets.project.celery import app
from tests.harness.db import Rollback

# The enqueue test publishes for real, to the session's broker: with the worker running, the
# message is taken at once (it finds no row: the test's transaction is rolled back, a failure
# it reports and does not retry) instead of waiting in the queue for a later session.
pytest.mark.usefixtures("celery_worker")(test_create_report_enqueues_one_render_on_commit)

# The page's five tests, collected from this module and run with pytest-django's fixtures.
__all__ = [
    "test_a_rate_limited_push_asks_to_retry_after_the_servers_delay",
    "test_a_real_worker_renders_a_committed_report",
    "test_a_transient_error_is_retried_until_it_succeeds",
    "test_create_report_enqueues_one_render_on_commit",
    "test_render_report_renders_once",
]


@pytest.mark.django_db
@pytest.mark.antipattern("snippets/django_integration/testing.py:plain_db_antipattern")
def test_why_a_worker_test_under_plain_db_sees_nothing(project_worker):
    """The worker reads through its own connection: the test's open transaction is invisible."""
    with pytest.raises(Report.DoesNotExist):
        worker_test_under_plain_db(None, project_worker)


@pytest.mark.django_db(transaction=True)
@pytest.mark.antipattern("snippets/django_integration/testing.py:eager_antipattern")
def test_why_task_always_eager_hides_a_publish_before_commit(celery_worker, published):
    """the eager test passes and publishes nothing; the same code on the real worker, rolled back,
    fails with `DoesNotExist`."""
    eager_test_of_a_publish_before_commit(None)  # passes: the bug is invisible in eager mode
    assert published == []  # eager mode never touched the broker

    # The same code on a real worker, when the transaction rolls back: the worker gets an id
    # for a row that is not there.
    with pytest.raises(Rollback), transaction.atomic():
        create_report_too_early("rolled back")
        raise Rollback
    [sent] = [p for p in published if p["name"] == render_report.name]
    with pytest.raises(Report.DoesNotExist):
        render_report.AsyncResult(sent["id"]).get(timeout=20)


def test_a_conftest_celery_worker_replaces_celery_contrib_pytests(tmp_path):
    """The name clash the page avoids: with `-p celery.contrib.pytest`, a conftest fixture named
    `celery_worker` silently replaces the plugin's, while the plugin's `celery_app` stays its
    own test app: memory://, unless CELERY_BROKER_URL is set in the environment, which
    `app.conf.broker_url` reads first. Run in pytest subprocesses, as a reader's suite runs."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture\ndef celery_worker():\n    return 'ours'\n"
    )
    (tmp_path / "test_clash.py").write_text(
        "def test_which(celery_worker, celery_app):\n"
        "    print('worker', repr(celery_worker))\n"
        "    print('app', celery_app.conf.broker_url)\n"
    )
    plugins = ["-p", "celery.contrib.pytest", "-p", "no:django", "-p", "no:cacheprovider"]
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
        and not k.startswith(("CELERY_", "SNIPPETS_"))
    }

    def run(env: dict[str, str]) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *plugins, "-s", "-q", str(tmp_path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = run(clean)
    assert "worker 'ours'" in out  # the conftest's fixture, not the plugin's worker
    assert "app memory://" in out  # the plugin's test app, not a project's
    out = run({**clean, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert "app redis://127.0.0.1:1/0" in out  # the environment wins over its memory://


def test_celerys_own_pytest_fixtures_use_a_fresh_in_memory_app():
    """celery.contrib.pytest's celery_app is a new TestApp on memory://, not your project's app;
    Celery 5.7 registers no pytest11 entry point, so the plugin is off until you enable it."""
    assert DEFAULT_TEST_CONFIG["broker_url"] == "memory://"
    assert DEFAULT_TEST_CONFIG["result_backend"] == "cache+memory://"
    plugins = {ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert "celery.contrib.pytest" not in plugins
    # The control: the lookup does find installed plugins, so the line above can fail.
    assert "pytest_django.plugin" in plugins


@pytest.mark.django_db
def test_override_settings_reaches_app_conf_but_not_a_bound_tasks_options():
    """`override_settings(CELERY_...)` changes what `app.conf` reads (it reads Django's settings
    live), but not the options a task copied from the settings when it was bound."""
    bound = render_report.time_limit
    assert bound == app.conf.task_time_limit  # the task took the setting...
    with override_settings(CELERY_TASK_TIME_LIMIT=bound + 7):
        assert app.conf.task_time_limit == bound + 7  # app.conf follows the override
        assert render_report.time_limit == bound  # ...once, at bind: it does not
