"""Fixtures over the one test harness (``tests/harness/``): every proof runs on a real worker.

* ``celery_worker`` - a session-scoped in-thread worker (``celery.contrib.testing.worker``)
  consuming the default queue of the snippets app, on whatever broker the environment names
  (memory by default; Redis or RabbitMQ in CI). Tests that use it need committed data:
  ``@pytest.mark.django_db(transaction=True)``.
* ``worker_process`` - a factory for a real ``celery worker`` subprocess (prefork by default),
  started as the recommended deployment starts it (``tests/harness/deployment.py``), for
  proofs where a process must die. Each one consumes its own queue (``wp.queue``). A test
  that starts one unlike the deployment declares it: ``@pytest.mark.deviation(what, reason=)``.
* ``beat_process`` - a factory for a real ``celery beat`` subprocess, started as
  ``celery-beat.service`` starts it, the same way: a deviation is declared with the same mark.
* ``shared_prefork_worker`` - one such subprocess (prefork, 2 children) for the session, for
  proofs that only need *a* worker as the deployment starts it (a redelivery proof); a section
  whose tests need another pool size overrides it in its own conftest.
* ``@pytest.mark.services("redis", "rabbitmq", "postgres", "broker")`` - the test needs real
  services; absent, skipped with the reason, or a failure with ``SNIPPETS_REQUIRE_SERVICES=1``.
* ``published`` - every task published during the test (``recording_publishes``).
* ``@pytest.mark.once`` - the module reads only the site and its sources (pages, hooks, snippet
  files, the test modules): no worker, no broker, no behaviour of Django. The result cannot
  differ between the two CI runs, so ``.ci/run`` runs it in the Python 3.12 / Redis run only.
  A test that imports a snippet to check what it does is not ``once``.
* ``bench_record`` - the recorder of the ``bench_*.py`` benchmarks (tests/bench.py).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from itertools import count

import pytest
from celery.worker import WorkController

from snippets.django_integration.testing import project_worker  # noqa: F401  the page's fixture
from tests.harness.celery import BeatProcess, WorkerProcess, running_beat, running_worker
from tests.harness.db import flushing_by_delete, unstick_connections
from tests.harness.deployment import BEAT_SETTINGS
from tests.harness.publishes import recording_publishes
from tests.harness.services import SERVICE_URLS, require_services

pytest_plugins = ["tests.bench", "tests.harness.order"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """A test stopped mid-query (a timeout) must not leave its process's connection busy."""
    try:
        return (yield)
    except BaseException:
        if "django" in sys.modules:
            unstick_connections()
        raise


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("services"):
        require_services(*marker.args)


def declared_deviations(request: pytest.FixtureRequest) -> list[str]:
    """The `what` of every `deviation` mark on the requesting test."""
    return [mark.args[0] for mark in request.node.iter_markers("deviation")]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server for Redis-specific proofs (mark the test services("redis"))."""
    return SERVICE_URLS["redis"]


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of the RabbitMQ server for RabbitMQ-specific proofs (services("rabbitmq"))."""
    return SERVICE_URLS["rabbitmq"]


@pytest.fixture(scope="session")
def celery_app():
    from snippets.project.celery import app

    return app


@pytest.fixture(scope="session", autouse=True)
def quick_worker_thread(celery_app) -> None:
    """Broker settings for the in-thread worker, applied before it starts (autouse): it polls
    a memory broker often, and on RabbitMQ an AMQP heartbeat lets the thread stop at once
    (without one, leaving `start_worker()` waits on the connection for seconds)."""
    if celery_app.conf.broker_url.startswith("memory://"):
        celery_app.conf.broker_transport_options = {
            **celery_app.conf.broker_transport_options,
            "polling_interval": 0.05,
        }
    if celery_app.conf.broker_url.startswith(("amqp", "pyamqp")):
        celery_app.conf.broker_heartbeat = 2
    # Celery reads CELERY_BROKER_URL from the environment at every connection
    # (celery/app/utils.py, Settings.broker_url), and some tests set it for a while (the
    # audit's private brokers, the settings modules' hosts). A worker reconnecting inside such
    # a window (a missed heartbeat on a loaded machine) follows it: in one CI run (#18) a
    # RabbitMQ-run process's in-thread worker retried a stopped private Redis, and the three
    # dead-letter proofs it then served timed out. The URL the session starts with, kept for
    # the app's reads and writes:
    celery_app.conf.broker_read_url = celery_app.conf.broker_write_url = celery_app.conf.broker_url


@pytest.fixture(scope="session")
def celery_worker(project_worker: WorkController) -> WorkController:  # noqa: F811  a fixture
    """A real worker in a thread, shared by the session; the default queue's consumer.

    It is the fixture the testing page shows (`project_worker`, snippets/django_integration/
    testing.py), under the name the proofs use: this suite never loads celery.contrib.pytest,
    whose `celery_worker` this name would otherwise replace (tests/django_integration/
    test_testing.py shows the clash)."""
    return project_worker


@pytest.fixture
def worker_process(celery_app, tmp_path, request) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a real `celery worker` subprocess; stopped (SIGTERM, then SIGKILL) after.

    ``worker_process(pool="prefork", concurrency=1, args=[...], env={...}, queue=None,
    ready=True, app="snippets.project")`` returns a `WorkerProcess`; publish to ``wp.queue``.
    ``env`` holds what the test changes (None unsets a variable). Needs a network broker.
    """
    require_services("broker")
    started = count()
    with ExitStack() as stack:

        def start(app: str | None = None, **options: object) -> WorkerProcess:
            name = f"wp{next(started)}-{uuid.uuid4().hex[:8]}"
            options.setdefault("queue", f"q-{request.node.name[:40]}-{name}")
            deviations = declared_deviations(request)
            worker = running_worker(
                celery_app, tmp_path, celery_app=app, name=name, deviations=deviations, **options
            )
            return stack.enter_context(worker)

        yield start


@pytest.fixture
def beat_process(tmp_path, request) -> Iterator[Callable[..., BeatProcess]]:
    """Factory: start a real `celery beat`; every one is stopped (SIGTERM) after the test.

    ``beat_process(schedule={...}, env={...}, scheduler=None, hostname=None, args=[...])``
    (see ``tests.harness.celery.start_beat``); ``schedule`` is the JSON form read by
    tests/periodic_tasks/beat_settings.py, the settings module of every beat unless ``env``
    names another. ``env`` holds what the test changes (None unsets a variable).
    """
    require_services("broker")
    started = count()
    with ExitStack() as stack:

        def start(
            schedule: dict | None = None,
            env: dict[str, str | None] | None = None,
            **options: object,
        ) -> BeatProcess:
            env = env or {}
            if "DJANGO_SETTINGS_MODULE" not in env:
                schedule_json = json.dumps(schedule or {})
                env = {
                    "DJANGO_SETTINGS_MODULE": BEAT_SETTINGS,
                    "PERIODIC_TEST_SCHEDULE": schedule_json,
                    **env,
                }
            name = f"beat{next(started)}-{uuid.uuid4().hex[:6]}"
            deviations = declared_deviations(request)
            beat = running_beat(tmp_path, name=name, env=env, deviations=deviations, **options)
            return stack.enter_context(beat)

        yield start


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """Each test database copied from a migrated template when the run names one
    (SNIPPETS_DEFAULT_DB_TEMPLATE, SNIPPETS_OTHER_DB_TEMPLATE: .ci/run migrates one per Django
    version before its test processes start). Django creates the test database `TEMPLATE
    <name>` (django/db/backends/postgresql/creation.py) and then migrates it as always, which
    finds nothing left to apply: the same schema, without each process running every
    migration while the others do the same (#18: the first test of each process waited
    14-20 s for its databases)."""
    from django.conf import settings

    for alias, database in settings.DATABASES.items():
        template = os.environ.get(f"SNIPPETS_{alias.upper()}_DB_TEMPLATE")
        if template and database["ENGINE"].endswith("postgresql"):
            database.setdefault("TEST", {})["TEMPLATE"] = template


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup) -> Iterator[None]:  # pytest-django's, extended
    """The test databases; then a cheaper flush after each transactional test.

    A transactional test ends with Django's `flush`: TRUNCATE of every table (here DELETEs:
    `flushing_by_delete`, tests/harness/db.py), then the post_migrate signal, whose receivers
    (contenttypes', auth's) write every content type and permission row again. Measured
    (#18): 70 queries per flush against 4, and 0.10-0.14 CPU-s of the test process against
    0.006. No proof reads those rows (no permission check, no
    generic relation), and the migrations still write them into each test database. So this
    process disconnects them once its databases exist; workers and beats never flush.
    """
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes
    from django.db.models.signals import post_migrate

    receivers = [
        (create_permissions, "django.contrib.auth.management.create_permissions"),
        (create_contenttypes, None),
    ]
    for receiver, uid in receivers:  # as their AppConfig.ready() connected them
        assert post_migrate.disconnect(receiver, dispatch_uid=uid), receiver
    with flushing_by_delete():  # tests/harness/db.py: 10-20 ms per flush instead of ~300
        yield
    for receiver, uid in receivers:
        post_migrate.connect(receiver, dispatch_uid=uid)


@pytest.fixture(scope="session")
def shared_prefork_worker(celery_app, django_db_setup, tmp_path_factory) -> Iterator[WorkerProcess]:
    """One real prefork worker (2 children), shared by the session: starting one costs seconds.

    It runs the recommended deployment with no deviation; a test that needs other settings,
    queues or pool sizes starts its own with `worker_process`. Publish to its queue.
    """
    require_services("broker")
    log_dir = tmp_path_factory.mktemp("shared-worker")
    with running_worker(celery_app, log_dir, concurrency=2, name="shared") as wp:
        yield wp


@pytest.fixture
def published() -> Iterator[list[dict]]:
    """Every task this process publishes during the test (name, id, args, headers)."""
    with recording_publishes() as sent:
        yield sent


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist process hands its worker timings to the controller, which prints the sum."""
    from tests.harness import forkserver
    from tests.harness.celery import TIMINGS
    from tests.harness.order import cpu_now

    # CPU seconds, for the profile of a CI run (2 cores: CPU, not waiting, sets its pace): this
    # test process, and every subprocess it started and reaped (workers with their pool
    # children, beat, `celery` commands; forked ones are reaped by the fork server).
    # (Not the xdist controller's: its reaped children are the test processes, counted there.)
    forkserver.close_all()
    if not session.config.pluginmanager.hasplugin("dsession"):
        for who, used in zip(("self", "children"), cpu_now(), strict=True):
            TIMINGS.append((f"cpu {who}", used))
        for how, count in forkserver.LAUNCHES.items():
            TIMINGS.append((f"launch {how}", count))
    if (output := getattr(session.config, "workeroutput", None)) is not None:
        output["harness_timings"] = [list(timing) for timing in TIMINGS]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    from tests.harness.celery import TIMINGS

    TIMINGS.extend(tuple(t) for t in getattr(node, "workeroutput", {}).get("harness_timings", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long worker subprocesses took to start and stop (CI time goes there)."""
    from tests.harness.celery import TIMINGS

    for what in ("worker start", "worker stop"):
        if seconds := [s for w, s in TIMINGS if w == what]:
            terminalreporter.write_line(
                f"harness: {len(seconds)} x {what}: {sum(seconds):.1f} s in all, "
                f"mean {sum(seconds) / len(seconds):.2f} s, max {max(seconds):.2f} s"
            )
    launches = {h: sum(n for x, n in TIMINGS if x == f"launch {h}") for h in ("forked", "new")}
    if any(launches.values()):
        terminalreporter.write_line(
            f"harness: worker and beat launches: {launches['forked']:.0f} forked from a fork "
            f"server, {launches['new']:.0f} as a new interpreter (tests/harness/forkserver.py)"
        )
    cpu = {w: sum(s for x, s in TIMINGS if x == f"cpu {w}") for w in ("self", "children")}
    if any(cpu.values()):
        terminalreporter.write_line(
            f"harness: CPU {cpu['self']:.0f} s in the test processes, "
            f"{cpu['children']:.0f} s in their subprocesses"
        )
