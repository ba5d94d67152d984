"""The recommended deployment, read from the files the site ships, never typed again here.

The worker's command line is the ``ExecStart`` of ``snippets/production/systemd/
celery-worker.service``, beat's that of ``celery-beat.service``, and the environment of both is
``celery.env`` (the units' EnvironmentFile). :func:`disagreements` checks that the Dockerfile,
the Kubernetes manifest and the Compose file state the same thing where they state it. Every
worker and every beat a proof starts runs under this baseline; :func:`differences` names what a
requested process changes, and a test must declare each change with
``@pytest.mark.deviation("what", reason="why")`` (``what`` starts with the flag or the
variable: ``"--pool=solo"``, ``"REMAP_SIGTERM unset"``), except the harness-wide deviations
(:data:`HARNESS_DEVIATIONS` for workers, :data:`BEAT_HARNESS_DEVIATIONS` for beat), which every
proof shares. A harness-wide entry that names a value (``"--max-interval=1"``) covers that value
only: another one must be declared.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

PRODUCTION = Path(__file__).resolve().parent.parent.parent / "snippets" / "production"
UNIT = PRODUCTION / "systemd" / "celery-worker.service"
BEAT_UNIT = PRODUCTION / "systemd" / "celery-beat.service"
ENV_FILE = PRODUCTION / "systemd" / "celery.env"

# Variables that only carry a settings module's input (tests/configuration/settings_override.py):
# part of the DJANGO_SETTINGS_MODULE deviation, declared with it.
# PERIODIC_TEST_SCHEDULE is the schedule tests/periodic_tasks/beat_settings.py reads; its other
# inputs (the scheduler, a pasted settings block, another base) are deviations of their own.
SETTINGS_CARRIERS = frozenset(
    {"SNIPPETS_BASE_SETTINGS", "SNIPPETS_SETTINGS_OVERRIDES", "PERIODIC_TEST_SCHEDULE"}
)

# The services are the test's own: its broker, result backend and databases.
SERVICE_VARIABLES = frozenset({"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL"})

HARNESS_DEVIATIONS: dict[str, str] = {
    "celery": "run as `python -m tests.covered_celery`: the same `celery` entry point, with "
    "coverage in every pool child when the run measures coverage (CI's Redis run), forked from "
    "an interpreter that has imported Celery, kombu and Django already (tests/harness/"
    "forkserver.py: only when the launch agrees with every environment variable those imports "
    "read; what the worker then loads, settings, project and app, it loads itself)",
    "--queues": "each proof consumes a private queue (`wp.queue`), so no other worker of the "
    "run takes its tasks",
    "--hostname": "a node name per worker, so a proof pings and inspects exactly that worker",
    "--concurrency": "sized per proof (1 to 4 children) for a 2-core CI machine; no page claims "
    "a behaviour that needs the production pool size",
    "--without-gossip": "no worker-to-worker events: one proof talks to one worker",
    "--without-mingle": "no start-up sync round with other workers (seconds per start)",
    "CELERY_BROKER_URL": "the test's broker (Redis or RabbitMQ, a private vhost or database)",
    "CELERY_RESULT_BACKEND": "the test's result backend",
    "TMPDIR": "the test's own temporary directory",
    "DJANGO_MEDIA_ROOT": "the test's own media directory",
}
"""Deviations every proof shares, with the reason: flag or variable -> why (rendered on pages)."""

BEAT_HARNESS_DEVIATIONS: dict[str, str] = {
    "celery": "run as `python -m tests.covered_celery`: the same `celery` entry point, measured "
    "by coverage when the run measures it, forked from an interpreter that has imported Celery, "
    "kombu and Django already (tests/harness/forkserver.py, as for workers)",
    "--hostname": "a node name per beat (the unit's is `celerybeat@%h`), so a probe pings "
    "exactly that beat and two beats of one proof are two nodes",
    "--schedule": "the schedule file in the test's temporary directory instead of "
    "$STATE_DIRECTORY, which systemd keeps across restarts; no proof restarts a beat on Celery's "
    "file scheduler and claims what the file remembers (tests/production/test_supervision.py and "
    "test_containers.py prove the unit's and the containers' paths themselves)",
    "--max-interval=1": "a scheduler pass at least every second (the unit leaves the scheduler's "
    "own: 300 s for Celery's, 5 s for django-celery-beat's), so one-second entries are sent on "
    "time and a proof lasts seconds; no page claims a figure of the default interval from a beat "
    "subprocess",
    "--loglevel=DEBUG": 'beat logs the id of each publish ("sent. id->") only at DEBUG: the '
    "proofs match beat's sends to the messages (INFO in the unit)",
    "DJANGO_SETTINGS_MODULE=tests.periodic_tasks.beat_settings": "celery.env's settings "
    "module plus the proof's own CELERY_BEAT_SCHEDULE, passed as JSON in PERIODIC_TEST_SCHEDULE",
    "CELERY_BROKER_URL": "the test's broker (Redis or RabbitMQ, a private vhost or database)",
    "CELERY_RESULT_BACKEND": "the test's result backend",
}
"""The same for every beat a proof starts (`tests.harness.celery.start_beat`)."""

# The settings module of a proof's beat (tests/periodic_tasks/beat_settings.py), named once above.
BEAT_SETTINGS = next(
    what.partition("=")[2] for what in BEAT_HARNESS_DEVIATIONS if "DJANGO_SETTINGS_MODULE=" in what
)

HARNESS = {UNIT: HARNESS_DEVIATIONS, BEAT_UNIT: BEAT_HARNESS_DEVIATIONS}


@dataclass(frozen=True)
class Recommended:
    """The process as its systemd unit starts it: `argv` after `celery`, and its environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str]

    def flags(self) -> dict[str, str]:
        return flags(self.argv)


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines of an EnvironmentFile (comments and snippet markers skipped)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def exec_start(path: Path = UNIT) -> str:
    """The unit's ExecStart line, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    return re.search(r"^ExecStart=(.+)$", text, re.M)[1]


def systemd_env(path: Path) -> dict[str, str]:
    """What systemd itself sets for the unit: $STATE_DIRECTORY for `StateDirectory=` (a system
    unit's is under /var/lib; systemd.exec(5))."""
    found = re.search(r"^StateDirectory=(\S+)$", path.read_text(), re.M)
    return {"STATE_DIRECTORY": f"/var/lib/{found[1]}"} if found else {}


@cache
def recommended(unit: Path = UNIT) -> Recommended:
    """The baseline: the unit's ExecStart with celery.env's variables (and systemd's) expanded,
    and celery.env itself."""
    env = read_env_file()
    values = {**env, **systemd_env(unit)}
    line = re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], exec_start(unit)).replace("%%", "%")
    argv = shlex.split(line)
    assert Path(argv[0]).name == "celery", line
    used = set(re.findall(r"\$\{(\w+)\}", exec_start(unit)))
    own_env = {k: v for k, v in env.items() if k not in used and k not in SERVICE_VARIABLES}
    return Recommended(tuple(argv[1:]), own_env)


SHORT = {
    "-A": "-A",
    "--app": "-A",
    "-Q": "--queues",
    "-c": "--concurrency",
    "-n": "--hostname",
    "-l": "--loglevel",
    "-s": "--schedule",
    "-S": "--scheduler",
}


def flags(argv: Sequence[str]) -> dict[str, str]:
    """`-A app worker --x=1 --y` as {"-A": "app", "worker": "", "--x": "1", "--y": ""}."""
    out: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in SHORT and args:
            out[SHORT[arg]] = args.pop(0)
        elif arg.startswith("--"):
            name, _, value = arg.partition("=")
            out[name] = value
        else:
            out[arg] = ""
    return out


def differences(
    argv: Sequence[str], env: Mapping[str, str | None], unit: Path = UNIT
) -> dict[str, str]:
    """What a worker (or, with `unit=BEAT_UNIT`, a beat) started with `argv` (after `celery`)
    and `env` changes: key -> how.

    `env` holds only what the proof sets on top of the test environment (None: unset). A key
    is a flag (`--pool`) or a variable (`REMAP_SIGTERM`); an explicit `--pool=prefork` is the
    default, not a change.
    """
    base, asked = recommended(unit).flags(), flags(argv)
    if asked.get("--pool") == "prefork":
        del asked["--pool"]
    diff = {
        key: f"{key}={asked.get(key, '(absent)')} instead of {base.get(key, '(absent)')}"
        for key in base.keys() | asked.keys()
        if base.get(key) != asked.get(key)
    }
    rec = recommended(unit).env
    for key in sorted(rec.keys() | env.keys(), key=lambda k: k in SETTINGS_CARRIERS):
        want, got = rec.get(key), env.get(key, rec.get(key))
        if want != got:
            shown = f"{key}={got if got is not None else '(unset)'} instead of {want}"
            if key in SETTINGS_CARRIERS:
                key = "DJANGO_SETTINGS_MODULE"
                shown = f"{diff.get(key, 'DJANGO_SETTINGS_MODULE')}, {shown}"
            diff[key] = shown
    return diff


def deviation_key(what: str) -> str:
    """The flag or variable a `deviation` mark names: its first word, before any `=`."""
    return re.split(r"[=\s]", what.strip(), maxsplit=1)[0]


class UndeclaredDeviation(AssertionError):
    """A proof started a worker or beat unlike the recommended deployment without saying so."""


def harness_covers(key: str, shown: str, unit: Path = UNIT) -> bool:
    """Whether a harness-wide deviation of the unit covers this difference: one that names the
    flag or variable alone covers any value, one that names a value (`--max-interval=1`) only
    that value."""
    for what in HARNESS[unit]:
        name, has_value, value = what.partition("=")
        if name == key and (not has_value or shown.startswith(f"{key}={value} instead of ")):
            return True
    return False


def check(diff: Mapping[str, str], declared: Iterable[str], unit: Path = UNIT) -> None:
    """Fail unless every difference is harness-wide or declared by a `deviation` mark."""
    allowed = {deviation_key(what) for what in declared}
    missing = sorted(
        key for key in diff if key not in allowed and not harness_covers(key, diff[key], unit)
    )
    if missing:
        process = "beat" if unit == BEAT_UNIT else "worker"
        raise UndeclaredDeviation(
            f"this {process} differs from the recommended deployment "
            f"({unit.relative_to(PRODUCTION.parent.parent)}, celery.env) without a "
            "@pytest.mark.deviation(...) on the test: " + "; ".join(diff[k] for k in missing)
        )


def disagreements() -> list[str]:
    """Where the Dockerfile, k8s worker.yaml, compose.yaml or the production settings' defaults
    contradict the unit + celery.env."""
    rec, found = recommended(), []
    rec_flags = rec.flags()
    docker = (PRODUCTION / "Dockerfile").read_text().replace("\\\n", " ")
    docker_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.+)$", docker, re.M))))
    manifest = next(
        doc
        for doc in yaml.safe_load_all((PRODUCTION / "k8s" / "worker.yaml").read_text())
        if doc and doc.get("kind") == "Deployment"
    )
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    k8s_env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    compose = yaml.safe_load((PRODUCTION / "compose.yaml").read_text())["services"]["worker"]
    settings = (PRODUCTION / "settings.py").read_text()
    defaults = dict(re.findall(r'os\.environ\.get\("(\w+)", "([^"]*)"\)', settings))
    sources = {
        "Dockerfile ENV": docker_env,
        "k8s worker.yaml env": k8s_env,
        "settings.py default": defaults,
    }
    for source, values in sources.items():
        for key, value in values.items():
            if key in rec.env and rec.env[key] != value:
                found.append(f"{source}: {key}={value}, celery.env: {rec.env[key]}")
    commands = {"k8s worker.yaml args": container["args"], "compose command": compose["command"]}
    for source, argv in commands.items():
        for key, value in flags(argv).items():
            if key in rec_flags and key != "--hostname" and rec_flags[key] != value:
                found.append(f"{source}: {key}={value}, the unit: {rec_flags[key]}")
    return found
