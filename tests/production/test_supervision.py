"""Proof for docs/production/supervision.md: systemd and supervisor units that start the
worker and beat of the snippets project, and stop them without losing the running task."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from snippets.production.containers import long_job
from tests.harness.celery import wait_ping
from tests.harness.services import require_tool
from tests.production.helpers import (
    HOST,
    SNIPPETS,
    attempts,
    celery_argv,
    job_dir,
    prod_env,
    soft_shutdown_default,
    unique,
    wait_attempts,
)

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEMD = SNIPPETS / "systemd"
UNITS = ["celery-worker.service", "celery-beat.service"]


def unit_values(unit: str) -> dict[str, str]:
    """Key=value pairs of a unit file, with its backslash continuations joined."""
    text = (SYSTEMD / unit).read_text().replace("\\\n", " ")
    pairs = (line.split("=", 1) for line in text.splitlines() if re.match(r"^\w+=", line))
    return {key: value for key, value in pairs}


def env_file() -> dict[str, str]:
    text = (SYSTEMD / "celery.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^\w+=", line))


def exec_start(unit: str, env: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it: ${VAR} from the environment, %% turned into %."""
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], unit_values(unit)["ExecStart"])
    return celery_argv(command.replace("%%", "%"))


def systemd_root(tmp_path: Path) -> Path:
    """A root for `systemd-analyze verify --root`: the system's units, ours, and the
    executables our units name (so verify checks them instead of failing on the path)."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(SYSTEMD / unit, root / "etc/systemd/system" / unit)
        binary = root / unit_values(unit)["ExecStart"].split()[0].lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", f"/etc/systemd/system/{unit}"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_passes_systemd_analyze_verify(unit, tmp_path):
    """Both units pass `systemd-analyze verify --root=…` (systemd 252) as they are, with the
    system's units and the executables they name under a temporary root: exit 0, no output."""
    require_tool("systemd-analyze", ["systemd-analyze", "--version"])
    result = verify(systemd_root(tmp_path), unit)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""  # not even a warning


def test_why_systemd_analyze_reports_a_wrong_kill_mode(tmp_path):
    """verify is no rubber stamp: it names the line it ignores (and exits 0: read its output)."""
    require_tool("systemd-analyze", ["systemd-analyze", "--version"])
    root = systemd_root(tmp_path)
    path = root / "etc/systemd/system/celery-worker.service"
    path.write_text(path.read_text().replace("KillMode=mixed", "KillMode=main-only"))
    result = verify(root, "celery-worker.service")
    assert "Failed to parse kill mode" in result.stderr


def test_the_stop_timeout_outlasts_the_soft_shutdown():
    """the numbers agree across the unit, the environment file and the settings."""
    worker = unit_values("celery-worker.service")
    assert worker["KillMode"] == "mixed"
    assert env_file()["REMAP_SIGTERM"] == "SIGQUIT"
    soft = float(env_file()["CELERY_SOFT_SHUTDOWN_TIMEOUT"])
    assert soft == soft_shutdown_default()
    assert soft + 30 <= int(worker["TimeoutStopSec"])


CONF = SNIPPETS / "supervisor" / "celery.conf"


def supervisor_programs(tmp_path: Path, monkeypatch, conf: Path = CONF) -> dict:
    """Parse the page's conf with supervisor's own parser (as supervisord does at start)."""
    import supervisor.options
    from supervisor.datatypes import name_to_uid

    # The `celery` user exists on the server, not on the test machine.
    monkeypatch.setattr(
        supervisor.options, "name_to_uid", lambda n: 999 if n == "celery" else name_to_uid(n)
    )
    main = tmp_path / "supervisord.conf"
    main.write_text(
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/s.pid\n"
        f"childlogdir={tmp_path}\n[include]\nfiles={conf}\n"
    )
    options = supervisor.options.ServerOptions()
    options.realize(args=["-c", str(main)])
    groups = {g.name: g.process_configs for g in options.process_group_configs}
    assert all(len(procs) == 1 for procs in groups.values())  # numprocs=1: one beat, one worker
    return {name: procs[0] for name, procs in groups.items()}


def test_the_supervisor_conf_passes_supervisors_parser(tmp_path, monkeypatch):
    """The supervisor config passes supervisor's own `ServerOptions` parser."""
    programs = supervisor_programs(tmp_path, monkeypatch)
    worker, beat = programs["celery-worker"], programs["celery-beat"]
    assert worker.stopsignal == signal.SIGTERM
    assert (worker.stopasgroup, worker.killasgroup) == (False, True)
    soft = float(worker.environment["CELERY_SOFT_SHUTDOWN_TIMEOUT"])
    assert soft + 30 <= worker.stopwaitsecs
    assert beat.stopsignal == signal.SIGTERM


def test_why_supervisors_parser_rejects_a_bad_signal(tmp_path, monkeypatch):
    """The parser is no rubber stamp: supervisord refuses to start on an unknown signal."""
    conf = tmp_path / "bad.conf"
    conf.write_text(CONF.read_text().replace("stopsignal=TERM", "stopsignal=TERMINATE", 1))
    with pytest.raises(SystemExit):
        supervisor_programs(tmp_path, monkeypatch, conf)


def worker_env_for(unit_env: dict[str, str], queue: str) -> dict[str, str]:
    """The unit's environment, with the test's broker, database and a queue of its own."""
    keep = {"DJANGO_SETTINGS_MODULE", "REMAP_SIGTERM"}
    env = prod_env(**{k: v for k, v in unit_env.items() if k in keep})
    return {
        **env,
        "CELERY_QUEUES": queue,
        "CELERY_CONCURRENCY": "1",
        "CELERY_SOFT_SHUTDOWN_TIMEOUT": "3",
    }


@pytest.mark.services("broker")
def test_the_systemd_worker_command_starts_a_worker_that_stops_cleanly(
    run_command, celery_app, tmp_path
):
    """ExecStart of celery-worker.service, run as systemd would (its EnvironmentFile, %%H),
    then stopped as systemd does: KillSignal to the main process only (KillMode=mixed)."""
    queue = unique("q-systemd")
    env = worker_env_for(env_file(), queue)
    worker = run_command(exec_start("celery-worker.service", env), env=env)
    wait_ping(celery_app, f"worker@{HOST}", proc=worker)
    job = job_dir(tmp_path, "job")
    result = long_job.apply_async((str(job),), queue=queue)
    wait_attempts(job, 1)

    worker.proc.send_signal(getattr(signal, unit_values("celery-worker.service")["KillSignal"]))
    # exit status 0: systemd records a clean stop (the log line's "exit code 1" is the code
    # Celery hands the shutdown signal, not the status the process exits with)
    assert worker.wait_exit(int(unit_values("celery-worker.service")["TimeoutStopSec"])) == 0
    assert "signal SIGTERM, Cold shutdown" in worker.log()  # logged by the page's receiver
    assert not (job / "done").exists()  # requeued, not lost: the next worker finishes it
    again = run_command(exec_start("celery-worker.service", env), env=env)
    (job / "release").touch()
    assert result.get(timeout=60).startswith("done by")
    assert len(attempts(job)) == 2
    again.stop()


@pytest.mark.antipattern("snippets/production/systemd/celery-worker.service")
@pytest.mark.services("broker")
def test_why_sigterm_to_the_whole_group_kills_the_running_task(run_command, celery_app, tmp_path):
    """KillMode=control-group (the default) also sends SIGTERM to every pool child. Without
    REMAP_SIGTERM the child dies at once, mid-task: no warm shutdown, no soft-shutdown window.
    (With REMAP_SIGTERM=SIGQUIT pool children ignore SIGTERM: KillMode=mixed is still the
    setting that says what you mean.)"""
    queue = unique("q-cgroup")
    env = worker_env_for(env_file(), queue)
    del env["REMAP_SIGTERM"]
    worker = run_command(exec_start("celery-worker.service", env), env=env)
    wait_ping(celery_app, f"worker@{HOST}", proc=worker)
    job = job_dir(tmp_path, "job")
    long_job.apply_async((str(job),), queue=queue)
    wait_attempts(job, 1)

    os.killpg(worker.pid, signal.SIGTERM)  # what KillMode=control-group does
    worker.wait_exit(60)
    assert "exited prematurely: signal 15 (SIGTERM)" in worker.log()
    assert not (job / "done").exists()


@pytest.mark.services("broker")
def test_the_systemd_beat_command_starts_beat(run_command, celery_app, tmp_path):
    """ExecStart of celery-beat.service, with $STATE_DIRECTORY as systemd sets it."""
    env = {
        **prod_env(DJANGO_SETTINGS_MODULE=env_file()["DJANGO_SETTINGS_MODULE"]),
        "STATE_DIRECTORY": str(tmp_path),
    }
    beat = run_command(exec_start("celery-beat.service", env), env=env)
    wait_ping(celery_app, f"celerybeat@{HOST}", proc=beat)  # Celery 5.7 beat remote control
    assert list(tmp_path.glob("celerybeat-schedule*"))  # the schedule, in $STATE_DIRECTORY


@pytest.mark.services("broker")
def test_the_supervisor_commands_start_a_worker_and_beat(
    run_command, celery_app, tmp_path, monkeypatch
):
    """both `command=` lines run a task and answer a ping."""
    programs = supervisor_programs(tmp_path, monkeypatch)
    queue = unique("q-supervisor")
    worker_conf = programs["celery-worker"]
    argv = [
        f"--queues={queue}" if a.startswith("--queues=") else a
        for a in celery_argv(worker_conf.command)
    ]
    # the conf's environment, its 50 s window shortened so the test's teardown is quick
    worker = run_command(
        argv, env=prod_env(**{**worker_conf.environment, "CELERY_SOFT_SHUTDOWN_TIMEOUT": "2"})
    )
    wait_ping(celery_app, f"worker@{HOST}", proc=worker)
    job = job_dir(tmp_path, "job")
    (job / "release").touch()
    assert long_job.apply_async((str(job),), queue=queue).get(timeout=60).startswith("done by")

    beat_conf = programs["celery-beat"]
    command = beat_conf.command.replace("/var/lib/celery", str(tmp_path))
    beat = run_command(celery_argv(command), env=prod_env(**beat_conf.environment))
    wait_ping(celery_app, f"celerybeat@{HOST}", proc=beat)
    assert shlex.split(beat_conf.command)[3] == "beat"
