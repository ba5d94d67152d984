"""Proof for docs/configuration/production-settings.md: the project's Celery settings hold what
the page says, on the app and on a running worker; the system check catches the anti-pattern."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from snippets.configuration import production_settings
from snippets.configuration.worker_settings import record_run
from snippets.production.celery_audit.system_check import check_celery_settings
from tests.configuration.helpers import settings_env
from tests.harness.process import fresh_python
from tests.harness.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
ANTIPATTERN = {k: v for k, v in vars(production_settings).items() if k.startswith("CELERY_")}


def test_the_page_invariants_hold_on_the_project_app(celery_app):
    """every row of the table, on the app."""
    conf = celery_app.conf
    # JSON only, both ways
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.accept_content == conf.result_accept_content == ["json"]
    # finite limits, soft < hard < the broker's visibility timeout
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit < visibility
    # late ack, a dead child's task is retried (bounded by max_retries), one message at a time
    assert conf.task_acks_late
    assert conf.task_retry_on_worker_lost
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.worker_prefetch_multiplier == 1
    # keep retrying the broker at startup; results expire; events for monitoring
    assert conf.broker_connection_retry_on_startup is True
    assert conf.result_expires == timedelta(days=1)
    assert conf.task_track_started
    assert conf.worker_send_task_events
    assert conf.task_send_sent_event
    assert conf.timezone == "UTC"


def test_celery_defaults_the_page_changes(monkeypatch):
    """What each line replaces (Celery 5.7.0 defaults), so the page's 'default' column is true."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery reads these first
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    conf = Celery(set_as_current=False).conf
    assert conf.broker_url is None
    assert conf.result_backend is None
    assert conf.timezone is None  # None means UTC
    assert conf.task_acks_late is False
    assert conf.task_reject_on_worker_lost is None
    assert conf.worker_prefetch_multiplier == 4
    assert conf.task_soft_time_limit is None
    assert conf.task_time_limit is None
    assert conf.broker_connection_retry_on_startup is None
    assert conf.result_expires == timedelta(days=1)
    assert conf.task_track_started is False
    assert conf.worker_send_task_events is False
    assert list(conf.accept_content) == ["json"]  # JSON is already the default: keep it
    assert conf.result_accept_content is None  # None means "same as accept_content"
    assert conf.task_send_sent_event is False


@pytest.mark.parametrize("name", ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_without_a_service_variable_the_settings_do_not_load(name):
    """No default in the block: a deploy that forgets the variable stops at startup, naming it
    (Celery itself would fall back to a broker on localhost). A `celery worker` started so:
    tests/test_project.py."""
    env = {k: v for k, v in os.environ.items() if k != name}
    run = fresh_python("import snippets.project.settings", env, timeout=60)
    assert run.returncode != 0
    assert f"ImproperlyConfigured: {name} is not set in the environment" in run.stderr


def test_the_system_check_passes_on_the_project_settings():
    """`manage.py check` is clean, and leaves the process's current Celery app alone (the
    check runs before `runserver`, whose `.delay()` calls must keep using the project's app)."""
    from celery import current_app

    before = current_app._get_current_object()
    assert check_celery_settings() == []
    call_command("check", tags=["celery"])  # raises SystemCheckError on any error
    assert current_app._get_current_object() is before


@pytest.mark.antipattern("snippets/configuration/production_settings.py:antipattern")
def test_why_the_antipattern_settings_fail_the_check():
    """The typo is silently ignored by Celery; the check names it, and the other two lines."""
    with override_settings(**ANTIPATTERN):
        del settings.CELERY_TASK_ACKS_LATE  # the line the typo was meant to be
        ids = {m.id for m in check_celery_settings()}
        assert ids == {"celery.E001", "celery.E002", "celery.E003"}
        with pytest.raises(SystemCheckError, match="CELERY_TASK_ACK_LATE"):
            call_command("check", tags=["celery"])
        app = Celery(set_as_current=False)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        assert app.conf.task_acks_late is False  # what the typo really leaves you with


def test_pickle_accepted_for_results_alone_fails_the_check():
    """Results are deserialized by whoever reads them: pickle there is as bad as for tasks."""
    with override_settings(CELERY_RESULT_ACCEPT_CONTENT=["json", "pickle"]):
        [message] = check_celery_settings()
    assert (message.id, message.msg) == ("celery.E002", "JSON only, got ['json', 'pickle']")


def test_acks_late_without_a_worker_lost_policy_warns():
    """`celery.W001`."""
    with override_settings(CELERY_TASK_RETRY_ON_WORKER_LOST=False):
        assert [m.id for m in check_celery_settings()] == ["celery.W001"]


def test_an_old_setting_name_still_works_and_is_named_as_old():
    """Celery 5.7 still reads pre-4.0 names under the namespace: not a typo, a rename."""
    from snippets.production.celery_audit.system_check import effective_celery_conf

    with override_settings(CELERY_ALWAYS_EAGER=True):
        assert effective_celery_conf().task_always_eager is True  # live, not ignored
        [message] = check_celery_settings()
    assert (message.id, message.msg) == (
        "celery.W002",
        "CELERY_ALWAYS_EAGER is the old name of CELERY_TASK_ALWAYS_EAGER",
    )


def test_the_hard_limit_is_checked_against_the_brokers_redelivery(monkeypatch):
    """45 min: under Redis' visibility timeout (1 h), over RabbitMQ's consumer_timeout (30 min)."""
    limits = {"CELERY_TASK_SOFT_TIME_LIMIT": 2600, "CELERY_TASK_TIME_LIMIT": 2700}
    with override_settings(**limits):
        monkeypatch.setenv("CELERY_BROKER_URL", "redis://redis.internal:6379/0")
        assert check_celery_settings() == []
        monkeypatch.setenv("CELERY_BROKER_URL", "amqp://rabbit.internal:5672//")
        [message] = check_celery_settings()
    assert (message.id, message.msg) == (
        "celery.E003",
        "need soft 2600 < hard 2700 < RabbitMQ consumer_timeout 1800",
    )


def test_on_redis_the_limit_is_checked_against_the_visibility_timeout_set(monkeypatch):
    """The transport option when set (here 40 min: under the 45 min limit), else Redis' own
    1 h."""
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://redis.internal:6379/0")
    limits = {"CELERY_TASK_SOFT_TIME_LIMIT": 2600, "CELERY_TASK_TIME_LIMIT": 2700}
    with override_settings(**limits, CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 2400}):
        [message] = check_celery_settings()
    assert message.msg == "need soft 2600 < hard 2700 < visibility_timeout 2400"
    with override_settings(**limits, CELERY_BROKER_TRANSPORT_OPTIONS={}):
        assert check_celery_settings() == []


def test_the_timezone_follows_djangos_time_zone():
    """With namespace="CELERY" and no CELERY_TIMEZONE, Celery uses TIME_ZONE (app/utils.py):
    the project states UTC, so a TIME_ZONE change leaves its schedules alone."""
    from snippets.production.celery_audit.system_check import effective_celery_conf

    with override_settings(TIME_ZONE="Europe/Paris"):
        assert effective_celery_conf().timezone == "UTC"  # the stated CELERY_TIMEZONE
        del settings.CELERY_TIMEZONE
        assert effective_celery_conf().timezone == "Europe/Paris"


def acknowledged_while_running(celery_app, wp) -> bool:
    """Run a 3 s task on the worker and ask it whether the message is already acked."""
    result = record_run.apply_async(("ack", 3.0), queue=wp.queue)

    def active() -> list[dict]:
        replies = celery_app.control.inspect([wp.hostname], timeout=1).active() or {}
        return [r for r in replies.get(wp.hostname, []) if r["id"] == result.id]

    [request] = wait_until(active, what="the task to be active")
    result.get(timeout=30)
    return request["acknowledged"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.services("broker")
def test_a_running_worker_has_the_settings_and_acks_after_the_task(
    shared_prefork_worker, celery_app
):
    """`celery inspect conf` on a running worker shows the settings, and a running task is not yet
    acknowledged. (The session's worker: it runs the recommended deployment, and neither the
    settings nor a task's ack depend on its pool size or on what it ran before.)"""
    wp = shared_prefork_worker
    [conf] = celery_app.control.inspect([wp.hostname], timeout=5).conf(with_defaults=True).values()
    assert conf["task_acks_late"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]
    assert conf["accept_content"] == ["json"]
    assert acknowledged_while_running(celery_app, wp) is False  # acked only when it is done


@pytest.mark.antipattern("snippets/configuration/production_settings.py:antipattern")
@pytest.mark.django_db(transaction=True)
@pytest.mark.services("broker")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(the typo)",
    reason="the anti-pattern under test: a misspelt setting",
)
def test_why_with_the_typo_the_worker_acks_before_the_task_runs(worker_process, celery_app):
    """CELERY_TASK_ACK_LATE instead of ..._ACKS_LATE: the running task is already acked, so a
    worker killed now loses it."""
    typo = {"CELERY_TASK_ACKS_LATE": False, "CELERY_TASK_ACK_LATE": True}  # ACKS_LATE never set
    wp = worker_process(env=settings_env(**typo))
    assert acknowledged_while_running(celery_app, wp) is True
