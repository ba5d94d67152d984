"""Proof for docs/production/audit.md: `manage.py celery_audit` passes the recommended project,
and each check fires on its anti-pattern."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from celery import Celery, Task
from celery.signals import task_failure
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from kombu import Connection

from snippets.production import audit as antipattern
from snippets.production import settings as production
from snippets.production.celery_audit import checks
from snippets.production.celery_audit.deployment import read_deployment
from tests.configuration.helpers import PrivateRedis
from tests.harness.brokers import PrivateRabbit
from tests.harness.celery import CELERY, wait_ping
from tests.harness.process import Process
from tests.harness.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PROCFILE = "snippets/production/audit.Procfile"
SHOP = "snippets.production.audit:shop"
RECOMMENDED = {"AUDIT_DEPLOYMENT": production.AUDIT_DEPLOYMENT,
               "AUDIT_ACKNOWLEDGED": production.AUDIT_ACKNOWLEDGED}  # fmt: skip


def audit(*args: str, **options: object) -> tuple[set[tuple[str, str]], bool, list[dict]]:
    """Run the command in-process: ({(check, object)} not acknowledged, failed, all rows)."""
    out = io.StringIO()
    try:
        call_command("celery_audit", "--format=json", *args, stdout=out, **options)
        failed = False
    except CommandError as error:
        failed = error.returncode == 1
    rows = json.loads(out.getvalue())["findings"]
    return {(r["check"], r["object"]) for r in rows if not r["acknowledged"]}, failed, rows


def shop_findings(*args: str) -> set[tuple[str, str]]:
    """The shop's findings (its app also carries the project's shared tasks: leave those out)."""
    found, failed, _rows = audit("--app", SHOP, "--no-db", "--deployment", PROCFILE, *args)
    assert failed
    return {(c, o) for c, o in found if not o.startswith("task:") or o.startswith("task:shop.")}


@contextlib.contextmanager
def only_the_projects_tasks() -> Iterator[None]:
    """What a fresh `manage.py celery_audit` loads: hide the tasks other test modules
    registered in this process (a test's own task, snippets.proof), i.e. the tasks of `tests`
    and `snippets` defined outside every installed app; Celery's built-in tasks stay."""
    from django.apps import apps

    from snippets.project.celery import app

    def foreign(task: object) -> bool:
        module = getattr(task, "__module__", "")
        inside = any(module.startswith(f"{a.name}.") for a in apps.get_app_configs())
        return module.startswith(("tests.", "snippets.")) and not inside

    hidden = {name: task for name, task in app.tasks.items() if foreign(task)}
    for name in hidden:
        del app.tasks[name]
    try:
        yield
    finally:
        app.tasks.update(hidden)


@pytest.fixture
def no_env_urls(monkeypatch):
    """Celery prefers CELERY_BROKER_URL/CELERY_RESULT_BACKEND from the environment over the
    app's own: unset them, as on a machine where the deploy forgot them."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)


def workflow_step() -> dict:
    workflow = yaml.safe_load((ROOT / "snippets/production/audit-workflow.yml").read_text())
    return next(s for s in workflow["jobs"]["audit"]["steps"] if "celery_audit" in s.get("run", ""))


def test_the_github_actions_step_exits_0_on_the_recommended_project():
    """The workflow step's own command and environment (snippets.production.settings, the
    deployment files it names): exit 0, every finding left acknowledged with a reason."""
    step = workflow_step()
    argv = [*shlex.split(step["run"].replace("uv run python", sys.executable)), "--format=json"]
    env = {**os.environ, **step["env"]}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["findings"]
    assert all(r["acknowledged"] for r in rows)
    assert {r["check"] for r in rows} == {"idempotency", "poison-loop"}
    poison = {r["object"] for r in rows if r["check"] == "poison-loop"}
    assert poison == {
        "task:snippets.error_handling.worker_loss.capture_payment_requeue",
        "task:snippets.task_design.idempotency.credit_account",
        "task:snippets.task_design.idempotency.credit_account_without_key",
    }


@pytest.mark.django_db
def test_in_process_the_project_app_and_its_beat_rows_pass():
    """The same on the test settings, in this process: the snippets app, its deployment files and
    a well-formed django-celery-beat row; the text report counts what was acknowledged."""
    cron = CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")
    PeriodicTask.objects.create(
        name="nightly", task="snippets.periodic_tasks.beat.refresh_rates", crontab=cron
    )
    with override_settings(**RECOMMENDED), only_the_projects_tasks():
        found, failed, _rows = audit("--app", "snippets.project")
        assert (found, failed) == (set(), False)
        out = io.StringIO()
        call_command("celery_audit", "--app", "snippets.project", stdout=out)
    assert re.search(r"\n0 errors, 0 warnings, \d+ acknowledged$", out.getvalue().rstrip())


@pytest.mark.antipattern("snippets/production/audit.py:antipattern")
def test_why_every_trap_of_the_shop_is_found(no_env_urls):
    """Each line of the anti-pattern app (and its Procfile) is a finding, with its object."""
    assert shop_findings() == {
        ("fallback-url", "setting:CELERY_BROKER_URL"),
        ("fallback-url", "setting:CELERY_RESULT_BACKEND"),
        ("shared-redis-db", "setting:CELERY_RESULT_BACKEND"),
        ("result-expires", "setting:CELERY_RESULT_EXPIRES"),
        ("connection-loss", "setting:CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS"),
        ("crontab-minute", "schedule:nightly-report"),
        ("schedule-file", "schedule:sync-stock"),
        ("unknown-task", "schedule:purge-carts"),
        ("unknown-task", "route:shop.tasks.send_receipt"),
        ("unconsumed-queue", "queue:emails"),
        ("redelivery-window", "task:shop.tasks.report"),  # hard limit 7200 s
        ("redelivery-window", "task:shop.tasks.sync_stock"),  # backoff up to 7200 s
        ("time-limits", "task:shop.tasks.send_invoice"),  # soft 240 > hard 60
        ("serializer", "task:shop.tasks.send_invoice"),
        ("chord-ignore-result", "task:shop.tasks.order_total"),  # a chord header part
        ("poison-loop", "task:shop.tasks.order_total"),  # its docstring says why twice is fine
        *{(c, f"task:shop.tasks.{t}") for c in ("idempotency", "poison-loop")
          for t in ("report", "sync_stock", "send_invoice")},
    }  # fmt: skip


@pytest.mark.antipattern("snippets/production/audit.py:antipattern")
def test_the_environment_and_debug_silence_the_fallback_and_a_worker_line_the_queue(
    no_env_urls, monkeypatch
):
    """A URL read from the environment is no fallback; DEBUG settings may use localhost; a
    worker started with --queues=emails consumes the routed queue."""
    found = shop_findings("--queues", "emails,celery")
    assert ("unconsumed-queue", "queue:emails") not in found
    # the recommended Compose file keeps beat's schedule file on a volume
    found = shop_findings("--deployment", "snippets/production/compose.yaml")
    assert ("schedule-file", "schedule:sync-stock") not in found
    monkeypatch.setenv("SHOP_BROKER_URL", antipattern.shop.conf.broker_url)  # settings read it
    assert ("fallback-url", "setting:CELERY_BROKER_URL") not in shop_findings()
    monkeypatch.delenv("SHOP_BROKER_URL")
    with override_settings(DEBUG=True):
        assert not {f for f in shop_findings() if f[0] == "fallback-url"}
    monkeypatch.setitem(antipattern.shop.conf, "broker_url", None)  # Celery's own default
    assert ("fallback-url", "setting:CELERY_BROKER_URL") in shop_findings()
    monkeypatch.setitem(antipattern.shop.conf, "broker_url", "memory://")
    assert ("fallback-url", "setting:CELERY_BROKER_URL") in shop_findings()


@pytest.mark.antipattern("snippets/production/audit.py:antipattern")
def test_a_chord_without_a_result_backend_and_no_failure_receiver(monkeypatch):
    """The shop's month_end is a chord: without a result backend its callback never runs.
    Without any task_failure receiver, a failure leaves no line with the task's context."""
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "")
    monkeypatch.setitem(antipattern.shop.conf, "result_backend", None)
    monkeypatch.setattr(task_failure, "receivers", [])
    found = shop_findings()
    assert ("result-backend", "setting:CELERY_RESULT_BACKEND") in found
    assert ("failure-logging", "signal:task_failure") in found
    # a LOGGING config that routes Celery's failure lines (celery.app.trace) counts (Saleor)
    routed = {"version": 1, "loggers": {"celery.app.trace": {"level": "ERROR"}}}
    with override_settings(LOGGING=routed):
        assert ("failure-logging", "signal:task_failure") not in shop_findings()


def test_the_system_checks_findings_are_reported_with_their_objects():
    """The Django system check runs inside the audit: the production-settings anti-pattern's
    typo, pickle and limit, and an old setting name, each on its setting."""
    from snippets.configuration import production_settings

    bad = {k: v for k, v in vars(production_settings).items() if k.startswith("CELERY_")}
    own = {"CELERY_RESTRICT_WRITER_METHOD": "shop.db.log"}  # a project's own (Saleor's)
    with override_settings(**bad, **own, CELERY_ALWAYS_EAGER=False):
        del settings.CELERY_RESULT_ACCEPT_CONTENT  # Celery's default: None, "as accept_content"
        found, failed, rows = audit("--app", "snippets.project", "--no-db")
    assert failed
    unknown = {
        r["object"]: (r["severity"], r["why"]) for r in rows if r["check"] == "unknown-setting"
    }
    typo, mine = (
        unknown["setting:CELERY_TASK_ACK_LATE"],
        unknown["setting:CELERY_RESTRICT_WRITER_METHOD"],
    )
    assert typo[0] == "error"
    assert typo[1].endswith("Did you mean CELERY_TASK_ACKS_LATE?")
    assert mine[0] == "warning"  # like no Celery setting: not a typo, the project's own
    assert found >= {
        ("unknown-setting", "setting:CELERY_TASK_ACK_LATE"),
        ("old-setting-name", "setting:CELERY_ALWAYS_EAGER"),
        ("serializer", "setting:CELERY_ACCEPT_CONTENT"),
        ("time-limits", "setting:CELERY_TASK_TIME_LIMIT"),
    }
    with override_settings(CELERY_ACCEPT_CONTENT=["application/json"]):  # JSON by content type
        assert not {
            f for f in audit("--app", "snippets.project", "--no-db")[0] if f[0] == "serializer"
        }
    with override_settings(CELERY_TASK_RETRY_ON_WORKER_LOST=False):
        found, _failed, _rows = audit("--app", "snippets.project", "--no-db")
    assert ("worker-lost", "setting:CELERY_TASK_ACKS_LATE") in found


@pytest.mark.django_db
def test_beat_rows_in_the_database_are_audited_like_settings():
    """A django-celery-beat row with hour set and minute at '*', and one naming a task no
    worker has: both found (and a disabled row is not read)."""
    hourly = CrontabSchedule.objects.create(minute="*", hour="3", timezone="UTC")
    PeriodicTask.objects.create(name="report", task="snippets.periodic_tasks.beat.refresh_rates",
                                crontab=hourly, queue="reports")  # fmt: skip
    daily = CrontabSchedule.objects.create(minute="0", hour="4", timezone="UTC")
    PeriodicTask.objects.create(name="gone", task="shop.tasks.removed", crontab=daily)
    PeriodicTask.objects.create(name="off", task="shop.old", crontab=daily, enabled=False)
    with override_settings(**RECOMMENDED), only_the_projects_tasks():
        found, failed, _rows = audit("--app", "snippets.project")
    assert failed
    assert found == {
        ("crontab-minute", "schedule:report"),
        ("unknown-task", "schedule:gone"),
        ("unconsumed-queue", "queue:reports"),
    }


def test_an_acknowledgement_turns_an_error_into_a_reason_and_exit_0(no_env_urls):
    """`AUDIT_ACKNOWLEDGED` keys are "<check> <object>" globs; a matched error no longer fails."""
    acks = {"* *": "adopting the audit on the shop: every finding is a ticket",
            "serializer task:shop.tasks.gone": "fixed since"}  # fmt: skip
    with override_settings(AUDIT_ACKNOWLEDGED=acks, AUDIT_SITE_URL="https://example.org/"):
        found, failed, rows = audit("--app", SHOP, "--no-db", "--deployment", PROCFILE)
    # a key that matches nothing is a warning of its own (the first key matches everything)
    assert (found, failed) == (
        {("stale-acknowledgement", "acknowledged:serializer task:shop.tasks.gone")},
        False,
    )
    assert {r["acknowledged"] for r in rows} == {acks["* *"], None}
    assert all(r["page"].startswith("https://example.org/") for r in rows)


def test_every_finding_names_a_page_of_this_site():
    """Every page a check links to exists (docs/<page>.md)."""
    package = ROOT / "snippets/production/celery_audit"
    text = "".join(p.read_text() for p in package.glob("*.py"))
    pages = set(re.findall(r'"((?:[a-z-]+/)+)"', text))
    assert len(pages) > 10
    assert [p for p in pages if not (DOCS / f"{p.rstrip('/')}.md").is_file()] == []


def test_a_task_without_python_source_is_read_as_not_retrying():
    """A task made from a builtin has no source to look for .retry( in."""
    app = Celery("bare", set_as_current=False)
    namespace: dict = {}
    exec("def generated():\n    pass\n", namespace)  # a function with no source file
    assert (
        checks.source(app.task(shared=False, name="bare.generated")(namespace["generated"])) == ""
    )


def test_deployment_files_say_where_beat_keeps_its_schedule(tmp_path):
    """Compose without a volume, a Kubernetes emptyDir or /tmp lose the schedule file; a named
    volume, a PersistentVolumeClaim and systemd's StateDirectory keep it. A worker whose
    queues are an unset variable makes the queue check stay silent instead of guessing."""
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  beat: {command: [beat, --schedule=/data/s]}\n"
        "  kept: {command: celery -A shop beat -s /data/s, volumes: ['beat:/data']}\n"
        "  worker: {command: [worker, '-Q${QUEUES}']}\n"
        "---\nplain text\n"
    )
    k8s = tmp_path / "beat.yaml"
    k8s.write_text(
        "spec:\n  template:\n    spec:\n"
        "      volumes: [{name: s, emptyDir: {}},\n"
        "                {name: p, persistentVolumeClaim: {claimName: c}}]\n"
        "      containers:\n"
        "        - {args: [beat, --schedule=/s/f], volumeMounts: [{name: s, mountPath: /s}]}\n"
        "        - {command: [celery, beat, --schedule=/p/f],\n"
        "           volumeMounts: [{name: p, mountPath: /p}]}\n"
        "        - {image: x}\n"
    )  # fmt: skip
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "beat: celery -A shop beat -s/tmp/s\nbroken: celery 'worker\n"
        "worker: celery -A shop worker -B\n"
    )
    d = read_deployment([compose, k8s, procfile])
    beats = {(Path(p.source).name, p.option("-s", "--schedule")): p.schedule_is_persistent()
             for p in d.beats()}  # fmt: skip
    assert beats == {
        ("compose.yaml", "/data/s"): True,
        ("beat.yaml", "/s/f"): False,
        ("beat.yaml", "/p/f"): True,
        ("Procfile", "/tmp/s"): False,
        ("Procfile", None): True,  # celery worker -B: ./celerybeat-schedule on the host
    }
    # the first compose beat has no volume: the container's filesystem goes with it
    assert next(p.schedule_is_persistent() for p in d.beats() if p.argv[0] == "beat") is False
    assert d.unresolved == [str(compose)]
    assert d.workers()[0].queues() == {"${QUEUES}"}


@pytest.fixture
def shop_connections():
    """The shop's connection pool and its control's producer pool are cached on the app: drop
    them around a test that points the app at a broker of its own."""
    antipattern.shop._after_fork()  # what a forked child does: no pool, no producer pool
    vars(antipattern.shop).pop("control", None)  # a cached_property holding the old producers
    yield
    antipattern.shop._after_fork()
    vars(antipattern.shop).pop("control", None)


@pytest.mark.services("redis")
def test_live_asks_the_broker_and_the_workers(tmp_path, monkeypatch, shop_connections):
    """`--live` on a Redis of the test's own: no worker answers, an evicting maxmemory-policy,
    and a queue with a message and no consumer are found; with a worker consuming it, the
    default policy and an empty queue, nothing is."""
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url)
        wait_until(client.ping, what="the private redis-server", ignore=(redis_py.ConnectionError,))
        monkeypatch.setitem(antipattern.shop.conf, "broker_url", redis.url)
        monkeypatch.setenv("CELERY_BROKER_URL", redis.url)
        monkeypatch.setitem(antipattern.shop.conf, "task_default_queue", "audit-default")
        client.rpush("emails", "{}")  # a message in a routed queue
        found = shop_findings("--live")
        assert {("no-worker", "broker"), ("no-consumer", "queue:emails")} <= found
        assert ("redis-eviction", "broker") not in found  # noeviction: Redis' default
        client.config_set("maxmemory-policy", "allkeys-lru")
        assert ("redis-eviction", "broker") in shop_findings("--live")
        client.config_set("maxmemory-policy", "noeviction")
        client.delete("emails")
        monkeypatch.setitem(
            antipattern.shop.conf, "broker_transport_options", {"polling_interval": 0.05}
        )
        # A worker subprocess of the shop, not an in-thread one: two in-thread workers in one
        # process share celery.worker.state, and a stopping one can stop the session's worker.
        name = f"shop-{uuid.uuid4().hex[:8]}"
        argv = [*CELERY, "-A", "snippets.production.audit:shop", "worker", "--pool=solo",
                "--queues=emails,audit-default", f"--hostname={name}@%h", "--without-gossip",
                "--without-mingle", "--loglevel=WARNING"]  # fmt: skip
        env = {**os.environ, "CELERY_BROKER_URL": redis.url, "CELERY_RESULT_BACKEND": redis.url}
        worker = Process.spawn(argv, log_path=tmp_path / f"{name}.log", env=env, name=name)
        try:
            wait_ping(antipattern.shop, f"{name}@{socket.gethostname()}", proc=worker)
            found = shop_findings("--live")
        finally:
            worker.stop()
        assert not {f for f in found if f[0] in {"no-worker", "no-consumer", "redis-eviction"}}
    finally:
        redis.stop()


@pytest.mark.services("rabbitmq")
def test_live_on_rabbitmq_reads_queue_depths_without_consuming(
    amqp_url, monkeypatch, shop_connections
):
    """On RabbitMQ, a passive declare gives a queue's depth: a queue of this test's own with a
    message and no consumer is found; a routed queue that does not exist (a 404 that closes
    the channel) is skipped, and the next queue is still read."""
    queue = f"queue-audit-{uuid.uuid4().hex[:8]}"  # read after "emails" (sorted)
    monkeypatch.setitem(antipattern.shop.conf, "broker_url", amqp_url)
    monkeypatch.setenv("CELERY_BROKER_URL", amqp_url)
    monkeypatch.setitem(antipattern.shop.conf, "task_default_queue", queue)
    with Connection(amqp_url) as connection:
        simple = connection.SimpleQueue(queue)
        simple.put({"waiting": True})
        try:
            found = shop_findings("--live")
        finally:
            simple.queue.delete()
            simple.close()
    assert ("no-consumer", f"queue:{queue}") in found
    assert ("no-consumer", "queue:emails") not in found  # no such queue on this vhost


def shop_worker(tmp_path: Path, env: dict[str, str], queues: str = "celery") -> Process:
    """A worker subprocess of the shop (never in-thread: see the live test above)."""
    name = f"shop-{uuid.uuid4().hex[:8]}"
    argv = [*CELERY, "-A", SHOP, "worker", "--pool=solo", f"--queues={queues}",
            f"--hostname={name}@%h", "--without-gossip", "--without-mingle",
            "--loglevel=INFO"]  # fmt: skip
    worker = Process.spawn(argv, log_path=tmp_path / f"{name}.log", env={**os.environ, **env},
                           name=name)  # fmt: skip
    try:
        wait_ping(antipattern.shop, f"{name}@{socket.gethostname()}", proc=worker)
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.mark.antipattern("snippets/production/audit.py:antipattern")
@pytest.mark.services("redis")
def test_why_a_chord_header_that_ignores_its_result_never_calls_back(
    tmp_path, monkeypatch, shop_connections
):
    """On a result backend that joins a chord by reading each part's stored result (the
    filesystem backend here; Redis passes return values on, see result-backends), a header
    part with ignore_result ran, and the callback never does: chord_unlock polls forever.
    The same chord with the part storing its result calls back on the same worker, and the
    audit finds the first (an error on this backend, a warning on Redis) and not the second."""
    redis = PrivateRedis(tmp_path)
    backend = f"file://{tmp_path / 'results'}"
    (tmp_path / "results").mkdir()
    env = {"CELERY_BROKER_URL": redis.url, "CELERY_RESULT_BACKEND": backend}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(antipattern.shop.conf, "broker_url", redis.url)
    monkeypatch.setitem(antipattern.shop.conf, "result_backend", backend)
    monkeypatch.setattr(antipattern.shop, "_backend_cache", None)  # built again, on the files
    monkeypatch.setattr(antipattern.shop, "_local", threading.local())
    redis.start()
    try:
        _found, _failed, rows = audit("--app", SHOP, "--no-db", "--deployment", PROCFILE)
        [row] = [r for r in rows if r["check"] == "chord-ignore-result"]
        assert (row["object"], row["severity"]) == ("task:shop.tasks.order_total", "error")
        worker = shop_worker(tmp_path, env)
        try:
            # What the recommended part does: its result is stored (the publisher's task
            # options go in the message, so the worker follows them), and the chord calls back.
            with monkeypatch.context() as m:
                m.setattr(antipattern.order_total, "ignore_result", False)
                assert ("chord-ignore-result", "task:shop.tasks.order_total") not in shop_findings()
                assert antipattern.month_end.apply_async().get(timeout=60) is None  # report ran
            callback = antipattern.month_end.apply_async()
            log = worker.log_path

            def header_done_and_unlock_still_polling() -> bool:
                text = log.read_text()
                parts = len(re.findall(r"shop\.tasks\.order_total\[[-\w]+\] succeeded", text))
                polls = len(re.findall(r"celery\.chord_unlock\[[-\w]+\] retry", text))
                return parts >= 4 and polls >= 5  # both chords' parts; the second polling

            wait_until(header_done_and_unlock_still_polling, 60, what="chord_unlock polling")
            assert callback.state == "PENDING"  # every part ran; the report never did
        finally:
            worker.stop()
    finally:
        redis.stop()
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")  # as on Redis
    monkeypatch.setitem(antipattern.shop.conf, "result_backend", "redis://127.0.0.1:6379/1")
    _found, _failed, rows = audit("--app", SHOP, "--no-db", "--deployment", PROCFILE)
    assert [r["severity"] for r in rows if r["check"] == "chord-ignore-result"] == ["warning"]


@pytest.mark.services("rabbitmq")
def test_live_reads_rabbitmqs_consumer_timeout_from_the_node(tmp_path, monkeypatch):
    """`--live` asks the node itself (rabbitmq-diagnostics environment): a node whose
    consumer_timeout is 60 s makes the project's hard limit (300 s) a redelivery the default
    (30 min) hides; a node without one silences the shop's two-hour windows; a node the CLI
    cannot reach, or no CLI at all, is said (info), and the checks keep --consumer-timeout."""
    rabbit = PrivateRabbit("[{rabbit, [{consumer_timeout, 60000}]}].\n")
    rabbit.start()
    try:
        monkeypatch.setenv("CELERY_BROKER_URL", rabbit.url)
        monkeypatch.setitem(antipattern.shop.conf, "broker_url", rabbit.url)
        node = ("--rabbitmq-node", rabbit.node)
        with override_settings(CELERY_BROKER_URL=rabbit.url):
            static = shop_findings()
            assert ("time-limits", "setting:CELERY_TASK_TIME_LIMIT") not in static
            _found, _failed, rows = audit("--app", SHOP, "--no-db", "--deployment", PROCFILE,
                                          "--live", *node)  # fmt: skip
            limit = next(r for r in rows if r["object"] == "setting:CELERY_TASK_TIME_LIMIT")
            assert limit["why"].endswith("< hard 300 < RabbitMQ consumer_timeout 60).")
            assert not [r for r in rows if r["check"] == "consumer-timeout"]
            rabbit.ctl("eval", "application:set_env(rabbit, consumer_timeout, undefined).")
            found = shop_findings("--live", *node)
            assert not {f for f in found if f[0] == "redelivery-window"}  # no timeout at all
            assert ("time-limits", "setting:CELERY_TASK_TIME_LIMIT") not in found
            assert {f for f in static if f[0] == "redelivery-window"}  # the default's two
            nowhere = ("--live", "--rabbitmq-node", "nosuch@localhost")
            _found, _failed, rows = audit("--app", SHOP, "--no-db", "--deployment", PROCFILE,
                                          *nowhere)  # fmt: skip
            [unread] = [r for r in rows if r["check"] == "consumer-timeout"]
            assert unread["severity"] == "info"
            assert "nosuch@localhost" in unread["why"]
            assert unread["why"].endswith("assumed 1800 s (--consumer-timeout).")
            with monkeypatch.context() as m:
                m.setenv("PATH", str(tmp_path))  # a host without RabbitMQ's CLI
                found = shop_findings("--live", "--consumer-timeout", "60")
            assert ("consumer-timeout", "broker") in found
            assert ("time-limits", "setting:CELERY_TASK_TIME_LIMIT") in found  # as given
    finally:
        rabbit.stop()


def test_chords_are_read_from_the_code_that_builds_them(tmp_path, monkeypatch):
    """`chord(header, body)`, `chord(header=...)` and `group(...) | body` (a chord too) are
    found, their header parts (`.s()`, `.si()`, `.signature()`, `.subtask()`) resolved by name
    or dotted name, a header list followed to what its function appends; a bare group and a
    chain wait for nothing, and a part the code picks at run time (an index, a list the caller
    passes) is not guessed at."""
    (tmp_path / "canvas_audit.py").write_text(
        "import celery\n"
        "from celery import Celery, group\n"
        "app = Celery('canvas', set_as_current=False, backend='redis://h/1')\n"
        "def part() -> int:\n"
        "    return 1\n"
        "for name in ('quiet', 'dotted', 'alone', 'picked', 'appended', 'signed', 'subtasked',\n"
        "             'chained'):\n"
        "    globals()[name] = app.task(shared=False, name=f'canvas.{name}',\n"
        "                               ignore_result=True)(part)\n"
        "loud = app.task(shared=False, name='canvas.loud')(part)\n"
        "class ns:\n"
        "    dotted = dotted\n"
        "flow = group(quiet.s(), loud.s()) | loud.s()\n"
        "other = celery.chord([ns.dotted.si(), [picked][0].s(), loud.s()], loud.s())\n"
        "plain = group(alone.s(), loud.s())\n"
        "spelled = celery.chord([signed.signature(), subtasked.subtask()], loud.s())\n"
        "chained_up = chained.s() | loud.s()  # a chain, no chord\n"
        "def split(n: int) -> None:\n"
        "    parts = [loud.s()]\n"
        "    for i in range(n):\n"
        "        parts.append(appended.s(i))\n"
        "    celery.chord(header=parts, body=loud.si()).delay()\n"
        "def given(parts: list) -> None:\n"
        "    celery.chord(parts)(loud.s())  # built by the caller: not followed\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("canvas_audit")
    project = checks.Project(module.app, False, [], read_deployment([]), 1800)
    found = {(f.object, f.severity) for f in checks.chord_ignore_result(project)}
    assert found == {
        ("task:canvas.quiet", "warning"),
        ("task:canvas.dotted", "warning"),
        ("task:canvas.appended", "warning"),  # appended to the list the chord's header is
        ("task:canvas.signed", "warning"),
        ("task:canvas.subtasked", "warning"),
    }


def test_a_delivery_limit_on_the_queue_bounds_the_poison_loop():
    """reject_on_worker_lost requeues a message that kills its worker; a queue with
    x-delivery-limit ends that (no finding), a quorum queue without one only on RabbitMQ 4
    (a warning), a classic queue never (an error)."""
    from kombu import Queue

    app = Celery("loop", set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_queues=[
            Queue("classic"),
            Queue("quorum", queue_arguments={"x-queue-type": "quorum"}),
            Queue("limited", queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": 5}),
        ],
        task_routes={f"loop.{q}": {"queue": q} for q in ("classic", "quorum", "limited")},
    )

    def part() -> None:
        """Harmless to run twice."""

    for queue in ("classic", "quorum", "limited"):
        app.task(shared=False, name=f"loop.{queue}")(part)
    project = checks.Project(app, False, [], read_deployment([]), 1800)
    found = {(f.object, f.severity) for f in checks.tasks(project) if f.check == "poison-loop"}
    mine = {(o, s) for o, s in found if o.startswith("task:loop.")}  # not the shared tasks
    assert mine == {("task:loop.classic", "error"), ("task:loop.quorum", "warning")}


@pytest.mark.deviation(
    "argv=celery -A lazy_audit:app worker --pool=solo (no unit's ExecStart)",
    reason="a throwaway app of this test, not the project: the claim is Celery's own (its worker "
    "finalizes an autofinalize=False app), whatever the pool",
)
@pytest.mark.deviation(
    "CELERY_BROKER_URL=memory://",
    reason="the worker only has to start and list its task; no message is sent",
)
def test_an_app_made_with_autofinalize_false_is_audited_as_its_worker_runs_it(
    tmp_path, monkeypatch
):
    """An app made with autofinalize=False runs on a worker, which finalizes it itself
    (celery/app/trace.py:835, app.finalize()); the audit finalizes it the same way and reads
    its tasks, instead of stopping at Celery's "Contract breach: app not finalized"."""
    (tmp_path / "lazy_audit.py").write_text(
        "from celery import Celery\n"
        "app = Celery('lazy', set_as_current=False, autofinalize=False)\n"
        "@app.task(name='lazy.charge', acks_late=True)\n"
        "def charge() -> None:\n"
        "    '''Charges the card.'''\n"
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", str(ROOT))])
    env = {**os.environ, "PYTHONPATH": path, "CELERY_BROKER_URL": "memory://"}
    argv = [*CELERY, "-A", "lazy_audit:app", "worker", "--pool=solo", "--without-gossip",
            "--without-mingle", "--loglevel=INFO"]  # fmt: skip
    worker = Process.spawn(argv, log_path=tmp_path / "lazy.log", env=env, name="lazy")
    try:
        log = worker.wait_for_log(" ready.")
    finally:
        worker.stop()
    assert ". lazy.charge" in log  # the worker's banner lists the task it registered
    monkeypatch.syspath_prepend(str(tmp_path))
    found, _failed, _rows = audit("--app", "lazy_audit:app", "--no-db", "--deployment")
    assert ("idempotency", "task:lazy.charge") in found  # late-acked, and its docstring is silent


def test_each_task_is_judged_by_its_own_options():
    """A retry (autoretry_for, or `.retry(` in the task's code) asks for the word on
    idempotency as a late ack does, and a plain task does not; a retry waits its
    default_retry_delay, or with retry_backoff up to retry_backoff_max (Celery's 600 s unless
    set); a hard limit of its own at the window redelivers only a late-acked task;
    reject_on_worker_lost loops only with late acks. Here the window is 600 s."""
    app = Celery("own", set_as_current=False)
    app.conf.update(task_soft_time_limit=240, task_time_limit=300,
                    broker_transport_options={"visibility_timeout": 600})  # fmt: skip

    def plain() -> None:
        """Sends a reminder."""

    def retries(self: Task) -> None:
        """Sends a reminder."""
        raise self.retry()

    for name, fun, options in (
        ("plain", plain, {}),
        ("autoretry", plain, {"autoretry_for": (OSError,)}),
        ("retry", retries, {"bind": True}),
        ("backoff", plain, {"autoretry_for": (OSError,), "retry_backoff": True}),
        ("delay", plain, {"default_retry_delay": 600}),
        ("early", plain, {"soft_time_limit": 590, "time_limit": 600}),
        ("rejects", plain, {"reject_on_worker_lost": True}),
    ):
        app.task(shared=False, name=f"own.{name}", **options)(fun)
    # the window: visibility_timeout on Redis, the consumer_timeout given on RabbitMQ
    project = checks.Project(app, False, [], read_deployment([]), 600)
    found = {(f.check, f.object) for f in checks.tasks(project) if f.object.startswith("task:own.")}
    assert found == {
        ("idempotency", "task:own.autoretry"),
        ("idempotency", "task:own.retry"),
        ("idempotency", "task:own.backoff"),
        ("redelivery-window", "task:own.backoff"),  # up to 600 s: Celery's retry_backoff_max
        ("redelivery-window", "task:own.delay"),
    }
