"""Proof for docs/project.md: the project's Celery settings are real and coherent."""

from celery.app.defaults import NAMESPACES, flatten
from celery.contrib.django.task import DjangoTask
from django.conf import settings


def test_every_celery_setting_is_one_celery_knows():
    known = {f"CELERY_{name.upper()}" for name, _opt in flatten(NAMESPACES)}
    ours = {name for name in dir(settings) if name.startswith("CELERY_")}
    assert ours, "no CELERY_ settings found"
    assert ours - known == set()


def test_json_only_and_time_limits_below_the_visibility_timeout(celery_app):
    conf = celery_app.conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.accept_content == conf.result_accept_content == ["json"]
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility
    assert conf.result_backend_transport_options["visibility_timeout"] == visibility
    assert conf.task_acks_late
    assert conf.worker_prefetch_multiplier == 1


def test_the_default_task_class_is_djangotask(celery_app):
    from snippets.django_integration.transactions import render_report

    assert isinstance(render_report, DjangoTask)
    assert hasattr(render_report, "delay_on_commit")
