"""The recommended deployment, read from the files the site ships, never typed again here.

The worker's command line is the ``ExecStart`` of ``snippets/production/systemd/
celery-worker.service`` and its environment is ``celery.env`` (the unit's EnvironmentFile).
:func:`disagreements` checks that the Dockerfile, the Kubernetes manifest and the Compose file
state the same thing where they state it. Every worker a proof starts runs under this baseline;
:func:`differences` names what a requested worker changes, and a test must declare each change
with ``@pytest.mark.deviation("what", reason="why")`` (``what`` starts with the flag or the
variable: ``"--pool=solo"``, ``"REMAP_SIGTERM unset"``), except the harness-wide deviations in
:data:`HARNESS_DEVIATIONS`, which every proof shares.
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
ENV_FILE = PRODUCTION / "systemd" / "celery.env"

# Variables that only carry a settings module's input (tests/configuration/settings_override.py):
# part of the DJANGO_SETTINGS_MODULE deviation, declared with it.
SETTINGS_CARRIERS = frozenset({"SNIPPETS_BASE_SETTINGS", "SNIPPETS_SETTINGS_OVERRIDES"})

# The services are the test's own: its broker, result backend and databases.
SERVICE_VARIABLES = frozenset({"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL"})

HARNESS_DEVIATIONS: dict[str, str] = {
    "celery": "run as `python -m tests.covered_celery`: the same `celery` entry point, with "
    "coverage in every pool child when the run measures coverage (CI's Redis run)",
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


@dataclass(frozen=True)
class Recommended:
    """The worker as the systemd unit starts it: `argv` after `celery`, and its environment."""

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


@cache
def recommended() -> Recommended:
    """The baseline: ExecStart with celery.env's variables expanded, and celery.env itself."""
    env = read_env_file()
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], exec_start()).replace("%%", "%")
    argv = shlex.split(line)
    assert Path(argv[0]).name == "celery", line
    used = set(re.findall(r"\$\{(\w+)\}", exec_start()))
    worker_env = {k: v for k, v in env.items() if k not in used and k not in SERVICE_VARIABLES}
    return Recommended(tuple(argv[1:]), worker_env)


SHORT = {"-A": "-A", "--app": "-A", "-Q": "--queues", "-c": "--concurrency"}


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


def differences(argv: Sequence[str], env: Mapping[str, str | None]) -> dict[str, str]:
    """What a worker started with `argv` (after `celery`) and `env` changes: key -> how.

    `env` holds only what the proof sets on top of the test environment (None: unset). A key
    is a flag (`--pool`) or a variable (`REMAP_SIGTERM`); an explicit `--pool=prefork` is the
    default, not a change.
    """
    base, asked = recommended().flags(), flags(argv)
    if asked.get("--pool") == "prefork":
        del asked["--pool"]
    diff = {
        key: f"{key}={asked.get(key, '(absent)')} instead of {base.get(key, '(absent)')}"
        for key in base.keys() | asked.keys()
        if base.get(key) != asked.get(key)
    }
    rec = recommended().env
    for key in rec.keys() | env.keys():
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
    """A proof started a worker unlike the recommended deployment without saying so."""


def check(diff: Mapping[str, str], declared: Iterable[str]) -> None:
    """Fail unless every difference is harness-wide or declared by a `deviation` mark."""
    allowed = set(HARNESS_DEVIATIONS) | {deviation_key(what) for what in declared}
    if missing := sorted(key for key in diff if key not in allowed):
        raise UndeclaredDeviation(
            "this worker differs from the recommended deployment "
            f"({UNIT.relative_to(PRODUCTION.parent.parent)}, celery.env) without a "
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
