"""Proof for docs/production/health-checks.md: each probe passes against a live worker (or
beat) and fails against a blocked or stopped one; the probes are the page's own scripts."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from snippets.production.scaling import child_pid
from tests.configuration.helpers import PrivateRedis, settings_env
from tests.harness.celery import consumed_queues, queue_length, wait_ping, worker_env
from tests.harness.process import Process
from tests.harness.wait import wait_until
from tests.production.helpers import HOST, PRODUCTION_SETTINGS, SNIPPETS, prod_env, unique

pytestmark = pytest.mark.django_db(transaction=True)
PROBES = SNIPPETS / "probes"


def probe(name: str, hostname: str = HOST, **env: str) -> Process:
    """Start a probe script as the kubelet would: `sh <script>`, `celery` on the PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env = worker_env(**prod_env(HOSTNAME=hostname, PATH=path, **env))
    log = Path(tempfile.mkdtemp(prefix="probe-")) / f"{name}.log"
    return Process.spawn(["sh", str(PROBES / name)], log_path=log, env=env)


def passes(name: str, hostname: str = HOST, **env: str) -> bool:
    return probe(name, hostname, **env).wait_exit(120) == 0


def files_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CELERY_LIVENESS_FILE": str(tmp_path / "alive"),
        "CELERY_READY_FILE": str(tmp_path / "ready"),
        "CELERY_LIVENESS_INTERVAL": "0.5",
        "CELERY_LIVENESS_MAX_AGE": "3",  # seconds; 60 on the page
    }


PROBE_FILES = [
    pytest.mark.deviation("CELERY_LIVENESS_FILE", reason="the Deployment's value, in tmp_path"),
    pytest.mark.deviation("CELERY_READY_FILE", reason="the Deployment's value, in tmp_path"),
    pytest.mark.deviation("CELERY_LIVENESS_INTERVAL=0.5", reason="a stale file within seconds"),
    pytest.mark.deviation("CELERY_LIVENESS_MAX_AGE=3", reason="60 on the page; 3 s keeps it short"),
]


def probe_files(test):
    """The deviations of a worker started by `start_worker` (the Deployment's probe files)."""
    for mark in PROBE_FILES:
        test = mark(test)
    return test


def start_worker(worker_process, tmp_path: Path):
    """A worker named celery@<pod name>, as in the Deployment (the node the probe pings)."""
    pod = unique("pod")
    wp = worker_process(
        env=prod_env(**files_env(tmp_path)), args=[f"--hostname=celery@{pod}"], ready=False
    )
    wait_ping(wp.app, f"celery@{pod}")
    return wp, pod


@pytest.mark.services("broker")
@probe_files
def test_worker_probes_pass_when_live_and_fail_when_blocked_or_stopped(worker_process, tmp_path):
    """all three pass on a live worker; SIGSTOP (blocked): the heartbeat goes stale and the ping
    gets no answer; SIGCONT: the heartbeat recovers; stopped: readiness and heartbeat fail."""
    wp, pod = start_worker(worker_process, tmp_path)
    env = files_env(tmp_path)
    wait_until(lambda: passes("worker-readiness.sh", **env))
    assert passes("worker-heartbeat.sh", **env)
    assert passes("worker-liveness.sh", f"{pod}")
    # Touched every CELERY_LIVENESS_INTERVAL (0.5 s here), not at the 10 s default: three
    # fresh touches within 5 s. (The probe alone cannot tell: a 10 s interval with a 3 s
    # maximum age still passes some of the time, and the waits above retry until it does.)
    alive = Path(env["CELERY_LIVENESS_FILE"])
    stamps = {alive.stat().st_mtime_ns}

    def touched_three_times() -> bool:
        stamps.add(alive.stat().st_mtime_ns)
        return len(stamps) > 3

    wait_until(touched_three_times, timeout=5, interval=0.05, what="three heartbeat touches")

    os.kill(wp.pid, signal.SIGSTOP)  # blocked: a hung event loop, a stuck broker call
    try:
        wait_until(lambda: not passes("worker-heartbeat.sh", **env))  # the file goes stale
        assert not passes("worker-liveness.sh", f"{pod}")  # and nobody answers the ping
    finally:
        os.kill(wp.pid, signal.SIGCONT)
    wait_until(lambda: passes("worker-heartbeat.sh", **env))  # it recovers on its own

    wp.stop(signal.SIGTERM)  # stopped
    assert not passes("worker-readiness.sh", **env)
    assert not passes("worker-heartbeat.sh", **env)


@pytest.mark.services("broker")
@probe_files
def test_heartbeat_catches_alive_but_not_consuming(worker_process, tmp_path):
    """The ping answers, yet a task published to the worker's queue waits there: only the
    heartbeat file notices. Once the worker consumes again, the task runs and the heartbeat
    comes back: the file follows consumption both ways, not the process."""
    wp, pod = start_worker(worker_process, tmp_path)
    env = files_env(tmp_path)
    node = f"celery@{pod}"
    wait_until(lambda: passes("worker-heartbeat.sh", **env))

    wp.app.control.cancel_consumer(wp.queue, destination=[node], reply=True)
    # The reply comes before the cancel: the worker only schedules it (`call_soon` in
    # celery/worker/control.py `cancel_consumer`). A task published before it takes effect is
    # taken by the consumer (seen on RabbitMQ), so wait until the worker no longer lists it.
    wait_until(lambda: wp.queue not in consumed_queues(wp.app, node))
    waiting = child_pid.apply_async(queue=wp.queue)

    wait_until(lambda: not passes("worker-heartbeat.sh", **env))
    assert passes("worker-liveness.sh", pod)  # the ping probe still says "alive"
    assert queue_length(wp.app, wp.queue) == 1  # ... while the task waits, taken by nobody
    assert waiting.state == "PENDING"

    wp.app.control.add_consumer(wp.queue, destination=[node], reply=True)
    assert waiting.get(timeout=30) in wp.pool_pids()  # consuming again: the worker runs it
    wait_until(lambda: passes("worker-heartbeat.sh", **env))  # and the heartbeat is back


@pytest.mark.antipattern("snippets/production/probes/worker-liveness-flappy.sh")
@pytest.mark.services("broker")
@probe_files
def test_why_the_default_one_second_timeout_flaps(worker_process, tmp_path):
    """A worker that pauses for a few seconds: the 1 s probe kills it, the 10 s one waits."""
    wp, pod = start_worker(worker_process, tmp_path)
    os.kill(wp.pid, signal.SIGSTOP)
    try:
        flappy = probe("worker-liveness-flappy.sh", pod)
        patient = probe("worker-liveness.sh", pod)
        flappy.wait_exit(120)
        time.sleep(1)  # the pause outlasts the 1 s probe
    finally:
        os.kill(wp.pid, signal.SIGCONT)
    patient.wait_exit(120)
    assert flappy.proc.returncode != 0  # "No nodes replied": the kubelet would restart the pod
    assert patient.proc.returncode == 0  # the same pause, well within 10 s: no restart


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "--scheduler=tests.production.stuck_scheduler:StuckScheduler",
    reason="Celery's scheduler, whose pass blocks while a marker file exists: the stuck beat",
)
@pytest.mark.deviation("SNIPPETS_STUCK_MARKER", reason="that marker file, in tmp_path")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE",
    reason="the production settings with CELERY_BEAT_REMOTE_CONTROL_MAX_TICK_AGE=3 (default: "
    "max(2 x interval, 60 s)), so the stuck pass is caught within seconds",
)
def test_beat_probe_fails_while_the_scheduler_is_stuck_and_the_process_still_runs(
    beat_process, celery_app, tmp_path
):
    """Not a stopped process: a scheduler pass blocks while beat's remote-control thread keeps
    consuming. The probe fails once the tick is older than the maximum age, and passes again,
    from the same process, when the pass ends: the silence is the tick-age check."""
    pod = unique("beat-pod")
    stuck = tmp_path / "stuck"
    beat = beat_process(
        hostname=pod,  # %h in the pod: the name the probe pings, celerybeat@$HOSTNAME
        scheduler="tests.production.stuck_scheduler:StuckScheduler",
        env={
            **settings_env(PRODUCTION_SETTINGS, CELERY_BEAT_REMOTE_CONTROL_MAX_TICK_AGE=3),
            "SNIPPETS_STUCK_MARKER": str(stuck),
        },
    )
    wait_ping(celery_app, f"celerybeat@{pod}", proc=beat)
    assert passes("beat-liveness.sh", pod)

    stuck.touch()
    wait_until(lambda: "scheduler pass stuck" in beat.log(), what="the stuck pass", context=beat)
    wait_until(lambda: not passes("beat-liveness.sh", pod))  # silent once the tick is 3 s old
    assert beat.proc.poll() is None  # the process is still there, and its pidbox thread
    # received the ping and chose silence (celery/beat.py, `_BeatNode.dispatch`):
    assert "beat pidbox: not answering ping, the scheduler has not ticked for" in beat.log()

    stuck.unlink()
    wait_until(lambda: passes("beat-liveness.sh", pod))  # the same process answers again


def k8s_container(name: str) -> dict:
    [container] = yaml.safe_load((SNIPPETS / "k8s" / name).read_text())["spec"]["template"]["spec"][
        "containers"
    ]
    return container


def window(probe: dict) -> int:
    """Seconds of failures before the kubelet acts: the delay, then `failureThreshold` periods."""
    return probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]


@pytest.mark.parametrize("manifest", ["worker.yaml", "beat.yaml"])
def test_each_manifest_holds_liveness_until_the_startup_probe_passed(manifest):
    """The same check as startup probe, with a window longer than liveness's; liveness has no
    initial delay of its own (it starts once the startup probe passed)."""
    container = k8s_container(manifest)
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["exec"] == liveness["exec"]
    assert "initialDelaySeconds" not in liveness
    assert window(startup) > window(liveness)


@pytest.mark.services("broker")
@probe_files
def test_a_worker_waiting_for_its_broker_fails_the_probe_until_it_connects(
    worker_process, tmp_path
):
    """The settings make a worker started before its broker wait for it; until it connects, the
    heartbeat probe fails. Under liveness alone (the manifest's old `initialDelaySeconds: 30`)
    a broker down for two minutes at deploy time restarts the pod in a loop; the startup
    probe's window gives it the time, and the probe passes once the broker is up."""
    server = PrivateRedis(tmp_path)
    env = files_env(tmp_path)
    wp = worker_process(env=prod_env(CELERY_BROKER_URL=server.url, **env), ready=False)
    try:
        wp.wait_for_log("Trying again in")  # no broker yet: the worker waits, alive
        assert wp.proc.poll() is None
        assert not passes("worker-heartbeat.sh", **env)  # what a kubelet would see meanwhile
        server.start()
        wp.wait_for_log("Connected to redis://", timeout=60)
        wait_until(lambda: passes("worker-heartbeat.sh", **env), what="the heartbeat", context=wp)
        wp.stop()
    finally:
        server.stop()
