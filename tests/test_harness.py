"""The harness itself: real worker subprocesses, the recommended deployment, and its guards."""

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from snippets.django_integration.models import Report
from snippets.django_integration.transactions import render_report
from tests.harness import deployment
from tests.harness.celery import beat_argv, delete_queues, queue_length, start_beat, worker_argv
from tests.harness.db import unstick_connections
from tests.harness.process import fresh_python

TESTS = Path(__file__).parent
HARNESS = TESTS / "harness"


@pytest.mark.deviation(
    "CELERY_SOFT_SHUTDOWN_TIMEOUT=1",
    reason="the stop below waits out the soft-shutdown window; 1 s instead of 50 keeps it short",
)
@pytest.mark.django_db(transaction=True)
def test_worker_process_sees_committed_rows_and_survives_a_killed_child(worker_process):
    wp = worker_process(concurrency=1, env={"CELERY_SOFT_SHUTDOWN_TIMEOUT": "1"})
    report = Report.objects.create(title="from a subprocess")
    result = render_report.apply_async((report.pk,), queue=wp.queue)
    assert result.get(timeout=30) == "from a subprocess"

    [child] = wp.pool_pids()
    os.kill(child, signal.SIGKILL)
    second = Report.objects.create(title="after the kill")
    assert (
        render_report.apply_async((second.pk,), queue=wp.queue).get(timeout=30) == "after the kill"
    )
    assert wp.pool_pids() != [child]
    assert wp.stop() >= 0  # exits by itself (negative: killed by a signal; 1: a cold shutdown)


def test_the_recommended_worker_is_read_from_the_systemd_unit_and_celery_env():
    rec = deployment.recommended()
    unit = deployment.UNIT.read_text()
    assert "EnvironmentFile=/etc/celery/celery.env" in unit
    assert rec.argv[:3] == ("-A", "snippets.project", "worker")
    assert rec.env["REMAP_SIGTERM"] == "SIGQUIT"
    assert rec.env["DJANGO_SETTINGS_MODULE"] == "snippets.production.settings"
    assert "CELERY_BROKER_URL" not in rec.env  # the test's own services


def test_the_deployment_files_agree_on_what_they_all_state():
    assert deployment.disagreements() == []


def test_a_worker_unlike_the_deployment_fails_unless_the_test_declares_it():
    argv = worker_argv(hostname="x@%h", queue="q", pool="solo", args=["--prefetch-multiplier=4"])
    diff = deployment.differences(argv, {**deployment.recommended().env, "REMAP_SIGTERM": None})
    own = set(diff) - set(deployment.HARNESS_DEVIATIONS)
    assert own == {"--pool", "--prefetch-multiplier", "REMAP_SIGTERM"}
    with pytest.raises(deployment.UndeclaredDeviation, match="REMAP_SIGTERM"):
        deployment.check(diff, ["--pool=solo", "--prefetch-multiplier=4"])
    deployment.check(diff, ["--pool=solo", "--prefetch-multiplier=4", "REMAP_SIGTERM unset"])
    assert deployment.differences(worker_argv(hostname="x@%h", queue="q"), {}).keys() <= set(
        deployment.HARNESS_DEVIATIONS
    )


def test_the_recommended_beat_is_read_from_its_unit_and_an_undeclared_change_is_refused(tmp_path):
    """celery-beat.service's ExecStart ($STATE_DIRECTORY as systemd sets it from StateDirectory=)
    and celery.env are beat's baseline; the harness's beat differs only harness-wide. A scheduler
    of the test's own, or another --max-interval than the harness-wide one, needs a mark."""
    beat = deployment.BEAT_UNIT
    rec = deployment.recommended(beat)
    assert "EnvironmentFile=/etc/celery/celery.env" in beat.read_text()
    assert rec.argv[:3] == ("-A", "snippets.project", "beat")
    assert rec.flags()["--schedule"].startswith("/var/lib/celery-beat/")  # StateDirectory=
    services = deployment.SERVICE_VARIABLES  # the test's own; the rest of celery.env is beat's
    assert rec.env == {k: v for k, v in deployment.read_env_file().items() if k not in services}

    def diff(*args: str, **argv: object) -> dict[str, str]:
        options = {"hostname": "b@%h", "schedule_file": Path("/tmp/s"), "args": args, **argv}
        asked = {**rec.env, "DJANGO_SETTINGS_MODULE": deployment.BEAT_SETTINGS}
        return deployment.differences(beat_argv(**options), asked, beat)

    plain = diff()
    assert set(plain) == {
        "--hostname",
        "--schedule",
        "--max-interval",
        "--loglevel",
        "DJANGO_SETTINGS_MODULE",
    }
    deployment.check(plain, [], beat)  # all harness-wide
    with pytest.raises(deployment.UndeclaredDeviation, match=r"beat differs.*--scheduler=x:S"):
        deployment.check(diff("--scheduler=x:S"), [], beat)
    deployment.check(diff("--scheduler=x:S"), ["--scheduler=x:S"], beat)
    with pytest.raises(deployment.UndeclaredDeviation, match="--max-interval=5 instead of"):
        deployment.check(diff(max_interval=5), [], beat)  # only =1 is harness-wide
    with pytest.raises(deployment.UndeclaredDeviation, match="PERIODIC_TEST_SCHEDULER"):
        changed = {**rec.env, "PERIODIC_TEST_SCHEDULER": "x:S"}
        deployment.check(deployment.differences(rec.argv, changed, beat), [], beat)
    with pytest.raises(deployment.UndeclaredDeviation, match="worker differs"):  # not beat's
        deployment.check(plain, [], deployment.UNIT)
    with pytest.raises(deployment.UndeclaredDeviation, match="--scheduler=x:S"):  # never started
        start_beat(tmp_path, name="refused", scheduler="x:S", env={"REMAP_SIGTERM": None})
    assert not (tmp_path / "refused.log").exists()


BANNED = {
    "subprocess.Popen(": re.compile(r"subprocess\.Popen\("),
    "a deadline loop": re.compile(r"time\.monotonic\(\) \+"),
}


@pytest.mark.parametrize("what", BANNED)
def test_only_the_harness_starts_processes_and_writes_deadline_loops(what):
    found = [
        f"{path.relative_to(TESTS)}:{n}"
        for path in sorted(TESTS.rglob("*.py"))
        if HARNESS not in path.parents and path != Path(__file__)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if BANNED[what].search(line)
    ]
    assert found == [], f"{what} outside tests/harness/: use tests.harness"


def test_modules_are_queued_longest_first_and_unknown_ones_as_the_median():
    from tests.harness.order import longest_first

    durations = {"a.py": 10.0, "b.py": 300.0, "c.py": 40.0}
    # new.py is unknown: it counts as the median (40 s) and keeps its place among equals.
    assert longest_first(["a.py", "new.py", "c.py", "b.py"], durations) == [
        "b.py",
        "new.py",
        "c.py",
        "a.py",
    ]
    assert longest_first(["x.py", "y.py"], {}) == ["x.py", "y.py"]


def test_the_site_modules_are_one_scope_with_the_sum_of_their_durations():
    """One process builds the site for all of tests/site/; the others keep one module each."""
    from tests.harness.order import scope_durations, scope_of

    assert scope_of("tests/site/test_links.py") == scope_of("tests/site/test_skill.py")
    assert scope_of("tests/task_design/test_calling.py") == "tests/task_design/test_calling.py"
    durations = {"tests/site/test_links.py": 19.0, "tests/site/test_site.py": 18.5, "a.py": 3.0}
    assert scope_durations(durations) == {scope_of("tests/site/test_site.py"): 37.5, "a.py": 3.0}


def test_the_committed_durations_name_only_modules_that_exist():
    from tests.harness.order import known_durations

    root = TESTS.parent
    assert known_durations(), "tests/harness/durations.json orders the CI run (.ci/run)"
    assert [module for module in known_durations() if not (root / module).exists()] == []


ONCE_USES = """
import ast, json, re
from pathlib import Path

workers = {"worker_process", "celery_worker", "shared_prefork_worker", "celery_app"}
marked = [
    p
    for p in sorted(Path("tests").rglob("test_*.py"))
    if re.search(r"^pytestmark = pytest\\.mark\\.once$", p.read_text(), re.M)
]
found = []
for path in marked:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            uses = {a.arg for a in node.args.args} & workers
            marks = [ast.unparse(d) for d in node.decorator_list]
            uses |= {m for m in marks if "services(" in m or "django_db" in m}
            found += [f"{path.name}::{node.name}: {sorted(uses)}"] if uses else []
print(json.dumps({"marked": len(marked), "found": found}))
"""


def test_a_module_marked_once_runs_no_worker_broker_or_database():
    """`once` modules run in one CI run only: nothing in them may depend on the broker or on
    Django's behaviour (tests/conftest.py). A worker, a service or a database use is refused.
    Parsed in a fresh interpreter: CPython 3.11 keeps the AST constructor's recursion depth
    in state the threads share (python/cpython#106905), and ast.parse in this test process
    failed in a CI run (RG) with "SystemError: AST constructor recursion depth mismatch",
    presumably beside another thread of an earlier test that parsed at the same moment."""
    done = fresh_python(ONCE_USES, {"PATH": os.environ["PATH"]}, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["marked"] >= 5
    assert result["found"] == []


@pytest.mark.services("postgres")
@pytest.mark.django_db(transaction=True)
def test_a_test_stopped_mid_query_leaves_no_busy_connection():
    """What pytest-timeout's signal method does: `Failed` raised inside a running query. The
    connection is left busy (the next query fails) until `unstick_connections` cancels it."""
    from django.db import connection
    from django.db.utils import DatabaseError

    def timeout(*_args: object) -> None:
        pytest.fail("Timeout (as pytest-timeout raises it)")

    previous = signal.signal(signal.SIGALRM, timeout)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(pytest.fail.Exception), connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(30)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    busy = "another command is already in progress"
    with pytest.raises(DatabaseError, match=busy), connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    assert unstick_connections() == ["default"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_test_that_sets_celery_broker_url_does_not_move_the_session_s_worker(
    celery_app, monkeypatch
):
    """Celery takes CELERY_BROKER_URL from the environment at each connection: a test that sets
    it (the audit's private brokers) must not send the session's in-thread worker, reconnecting
    meanwhile, to a broker that goes away with the test (tests/conftest.py)."""
    before = celery_app.connection_for_read().as_uri()
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    assert celery_app.connection_for_read().as_uri() == before
    assert celery_app.connection_for_write().as_uri() == before


@pytest.mark.services("postgres")
@pytest.mark.django_db(transaction=True)
def test_the_flush_after_a_transactional_test_deletes_every_row_related_ones_too():
    """tests/harness/db.py's flush: DELETEs, not TRUNCATE, and rows that reference each other
    (a periodic task and its interval, a foreign key) are all gone after it, as after the
    TRUNCATE it replaces; the DELETEs' order does not matter (the keys are deferred)."""
    from django.core.management import call_command
    from django.core.management.color import no_style
    from django.db import connection
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=10, period="seconds")
    PeriodicTask.objects.create(name=f"flushed-{uuid.uuid4().hex[:8]}", task="x", interval=every)
    tables = [IntervalSchedule._meta.db_table, PeriodicTask._meta.db_table]  # parent first
    sql = connection.ops.sql_flush(no_style(), tables)
    assert sql[0] == "SET CONSTRAINTS ALL DEFERRED;"
    assert [s.split()[:2] for s in sql[1:]] == [["DELETE", "FROM"]] * 2

    call_command("flush", verbosity=0, interactive=False, inhibit_post_migrate=True)
    assert (IntervalSchedule.objects.count(), PeriodicTask.objects.count()) == (0, 0)


@pytest.mark.services("broker")
def test_a_queue_another_process_declared_is_emptied_by_delete_queues(celery_app):
    """The worker subprocess declares a proof's queue, not the test process: on Redis kombu's
    queue_delete alone left its messages there (a fixed queue name then saw the last run's)."""
    queue = f"q-other-{uuid.uuid4().hex[:8]}"
    publish = (
        "import os, kombu\n"
        "with kombu.Connection(os.environ['CELERY_BROKER_URL']) as conn:\n"
        f"    q = kombu.Queue({queue!r}, routing_key={queue!r})\n"
        f"    conn.Producer().publish('left over', routing_key={queue!r}, declare=[q])\n"
    )
    subprocess.run([sys.executable, "-c", publish], check=True, timeout=60)
    assert queue_length(celery_app, queue) == 1

    delete_queues(celery_app, queue)
    assert queue_length(celery_app, queue) == 0


def test_the_celery_command_s_own_variables_in_a_developer_s_shell_do_not_reach_the_proofs(
    monkeypatch,
):
    """An exported RESULT_BACKEND (or BROKER_URL, APP ...) is a global option of the `celery`
    command and beats the settings: a django-db proof would run on Redis. worker_env() drops
    every one the command reads (the list is checked against celery/bin/celery.py), unless a
    test passes it itself."""
    import celery.bin.celery as cli

    from tests.harness.celery import CLI_ENVVARS, worker_env

    read = set(re.findall(r"envvar='(\w+)'", Path(cli.__file__).read_text()))
    assert read - {"NO_COLOR"} == set(CLI_ENVVARS)  # NO_COLOR changes no behaviour
    for name in CLI_ENVVARS:
        monkeypatch.setenv(name, "from-the-shell")
    env = worker_env(BROKER_URL="asked")
    assert env["BROKER_URL"] == "asked"
    assert not {name for name in CLI_ENVVARS if name != "BROKER_URL"} & set(env)


def test_a_forked_worker_starts_as_a_new_interpreter_would_and_only_when_it_can(tmp_path):
    """The fork server (tests/harness/forkserver.py) against a new interpreter, for one launch:
    the same argv, sys.path, working directory, `__main__`, environment (and wsgiref's copy of
    it, which prometheus_client's import makes in the server), billiard's REMAP_SIGTERM (read at
    import), signal handlers, session, descriptors, coverage and exit status. A launch that
    differs from the server in a variable its imports read, or in one the interpreter reads at
    its start, is not forked from it."""
    from tests.harness import forkserver
    from tests.harness.celery import worker_env
    from tests.harness.process import ROOT, Process

    env = worker_env(REMAP_SIGTERM="SIGQUIT", REPORT_EXIT="3")
    argv = [sys.executable, "-m", "tests.harness.interpreter_report"]
    fresh = Process.spawn(argv, log_path=tmp_path / "fresh.json", env=env)
    assert fresh.wait_exit() == 3
    # Started for another launch: one with other databases, as the next proof's worker has.
    server_env = {**env, "SNIPPETS_DEFAULT_DB_NAME": "another_proofs"}
    server = forkserver.Server(server_env, str(ROOT), tmp_path / "forkserver.log")
    try:
        with (tmp_path / "forked.json").open("wb") as out:
            forked = server.launch(
                argv, env=env, fds=[0, out.fileno(), out.fileno()], new_session=True
            )
        assert forked.wait(60) == 3
        reaped = forkserver.CPU_REAPED[0]
        assert json.loads((tmp_path / "forked.json").read_text()) == json.loads(fresh.log())
        assert json.loads(fresh.log())["remap_sigterm"]  # the variable took effect at import
        assert server.serves(env, str(ROOT))
        assert reaped > 0  # its CPU reached this process
        for changed in ({"REMAP_SIGTERM": "SIGTERM"}, {"PYTHONHASHSEED": "1"}, {"LC_ALL": "C"}):
            assert not server.serves({**env, **changed}, str(ROOT)), changed
        assert not server.serves(env, "/")
    finally:
        server.close()
    assert server.proc.returncode == 0  # it saw its end of the socket close, and exited


def test_the_fork_server_imports_only_what_the_project_s_setup_imports_anyway():
    """A module the server imported and a fresh worker would not have is the one difference a
    forked worker could show (an import's side effect, a registry entry): each of
    PROJECT_IMPORTS must be imported by the project's own setup in a new interpreter."""
    from tests.harness import forkserver
    from tests.harness.celery import worker_env

    code = (
        "import sys, django\n"
        "from snippets.project.celery import app\n"
        "django.setup()\n"
        "app.loader.import_default_modules()\n"
        f"print([m for m in {forkserver.PROJECT_IMPORTS!r} if m not in sys.modules])\n"
    )
    result = fresh_python(code, worker_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
