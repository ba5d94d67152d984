"""Read the worker and beat command lines out of deployment files: systemd units, env files,
Compose and Kubernetes YAML, shell scripts and Procfiles.

Only what two checks need: the queues each worker consumes, and where beat keeps its schedule
file and whether that path outlives a restart.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIABLE = re.compile(r"\$\{(\w+)\}|\$\((\w+)\)|\$(\w+)")
PREFIX = re.compile(r"^(ExecStart=|[\w-]+:\s+)")
EPHEMERAL = ("/tmp", "/run", "/var/run", "/var/tmp", "/dev/shm")  # paths we judge, never write to


@dataclass(frozen=True)
class CeleryProcess:
    kind: str  # "worker" or "beat"
    source: str  # the file it was read from
    argv: tuple[str, ...]
    persistent: tuple[str, ...] = ()  # paths that outlive the process (volumes, StateDirectory)
    container: bool = False  # a container's filesystem is lost with the container

    def option(self, *names: str) -> str | None:
        """The value of the last -X/--xx option among `names` (`--opt=value` or `--opt value`)."""
        value = None
        for i, arg in enumerate(self.argv):
            for name in names:
                if arg == name and i + 1 < len(self.argv):
                    value = self.argv[i + 1]
                elif name.startswith("--") and arg.startswith(f"{name}="):
                    value = arg.partition("=")[2]
                elif not name.startswith("--") and arg.startswith(name) and arg != name:
                    value = arg[len(name) :]
        return value

    def queues(self) -> set[str] | None:
        """The queues named by -Q/--queues; None when the worker consumes the app's defaults."""
        value = self.option("-Q", "--queues")
        return None if value is None else {q for q in value.split(",") if q}

    def schedule_is_persistent(self, default: str = "celerybeat-schedule") -> bool:
        path = self.option("-s", "--schedule") or default
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.persistent):
            return True
        if self.container or not path.startswith("/"):
            return not self.container  # relative: the host's working directory survives
        return not path.startswith(EPHEMERAL)


@dataclass
class Deployment:
    processes: list[CeleryProcess] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # workers whose queues we cannot read

    def workers(self) -> list[CeleryProcess]:
        return [p for p in self.processes if p.kind == "worker"]

    def beats(self) -> list[CeleryProcess]:
        embedded = [p for p in self.workers() if "-B" in p.argv or "--beat" in p.argv]
        return [p for p in self.processes if p.kind == "beat"] + embedded


def substitute(text: str, env: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: env.get(next(g for g in m.groups() if g), m[0]), text)


def celery_argv(words: list[str]) -> tuple[str, tuple[str, ...]] | None:
    """("worker"|"beat", argv) when `words` start a Celery worker or beat, else None."""
    for kind in ("worker", "beat"):
        if kind in words[:6] and (words[0] == kind or any("celery" in w for w in words[:3])):
            return kind, tuple(words)
    return None


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def from_lines(path: Path, env: dict[str, str], persistent: tuple[str, ...]) -> list[Any]:
    """Shell scripts, Procfiles, systemd ExecStart=: one command per (continued) line."""
    text = substitute(path.read_text().replace("\\\n", " "), env)
    found = []
    for line in text.splitlines():
        line = PREFIX.sub("", line.strip())  # ExecStart=..., or a Procfile's "worker: ..."
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if parsed := celery_argv(words):
            found.append(CeleryProcess(parsed[0], str(path), parsed[1], persistent))
    return found


def systemd_persistent(path: Path) -> tuple[str, ...]:
    dirs = re.findall(r"^StateDirectory=(.+)$", path.read_text(), re.M)
    return tuple(f"/var/lib/{d}" for line in dirs for d in line.split())


def from_yaml(path: Path, env: dict[str, str]) -> list[CeleryProcess]:
    """Compose services and Kubernetes containers (command/entrypoint/args, volumes)."""
    import yaml  # PyYAML: needed only when YAML files are named

    found = []
    for doc in yaml.safe_load_all(substitute(path.read_text(), env)):
        if not isinstance(doc, dict):
            continue
        if "services" in doc:  # Compose: a named volume or a bind mount survives the container
            for service in doc["services"].values():
                mounts = tuple(
                    str(v).split(":")[1] for v in service.get("volumes", []) if ":" in str(v)
                )
                words = words_of(service.get("entrypoint")) + words_of(service.get("command"))
                found += container(path, words, mounts)
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        claims = {
            c["metadata"]["name"] for c in doc.get("spec", {}).get("volumeClaimTemplates", [])
        }
        claims |= {v["name"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in spec.get("containers", []):
            mounts = tuple(m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in claims)
            found += container(path, words_of(c.get("command")) + words_of(c.get("args")), mounts)
    return found


def words_of(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def container(path: Path, words: list[str], mounts: tuple[str, ...]) -> list[CeleryProcess]:
    parsed = celery_argv(words) if words else None
    if not parsed:
        return []
    return [CeleryProcess(parsed[0], str(path), parsed[1], mounts, container=True)]


def read_deployment(paths: list[Path], queues_lines: list[str] = ()) -> Deployment:
    """The Celery processes started by these files (and by `--queues` lines given by hand)."""
    env_files = [p for p in paths if p.suffix == ".env" or p.name.endswith(".env")]
    env: dict[str, str] = {}
    for p in env_files:
        env |= read_env_file(p)
    deployment = Deployment()
    for path in paths:
        if path in env_files:
            continue
        if path.suffix in {".yaml", ".yml"}:
            deployment.processes += from_yaml(path, env)
        else:
            state = systemd_persistent(path)  # systemd sets $STATE_DIRECTORY to the first
            local = {**env, "STATE_DIRECTORY": state[0]} if state else env
            deployment.processes += from_lines(path, local, state)
    for line in queues_lines:
        deployment.processes.append(CeleryProcess("worker", "--queues", ("worker", f"-Q{line}")))
    for worker in deployment.workers():
        if VARIABLE.search(worker.option("-Q", "--queues") or ""):
            deployment.unresolved.append(worker.source)
    return deployment
