"""The one skip-or-fail gate: absent services skip a test, or fail it in CI.

With ``SNIPPETS_REQUIRE_SERVICES=1`` (CI) an absent service or tool is a failure, so CI runs
with zero skips; on a laptop without them, the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from functools import cache
from urllib.parse import urlparse

import pytest

REQUIRE_SERVICES = os.environ.get("SNIPPETS_REQUIRE_SERVICES") == "1"
SERVICE_URLS = {
    "redis": os.environ.get("SNIPPETS_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "rabbitmq": os.environ.get("SNIPPETS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
DEFAULT_PORTS = {"redis": 6379, "amqp": 5672, "postgres": 5432, "postgresql": 5432}


@cache
def _reachable(url: str) -> bool:
    parts = urlparse(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.split("+")[0], 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def service_missing(name: str) -> str | None:
    """Why the named service is unavailable to this run, or None when it is there."""
    from django.conf import settings

    if name in SERVICE_URLS:
        url = SERVICE_URLS[name]
        return None if _reachable(url) else f"{name} is not reachable at {url}"
    if name == "postgres":
        db = settings.DATABASES["default"]
        if "postgresql" not in db["ENGINE"]:
            return "needs PostgreSQL as the default database (set DATABASE_URL=postgres://...)"
        return None
    if name == "broker":
        url = settings.CELERY_BROKER_URL
        if url.startswith("memory://"):
            return "needs a network broker shared with subprocesses (set CELERY_BROKER_URL)"
        return None if _reachable(url) else f"the broker is not reachable at {url}"
    raise ValueError(f"unknown service {name!r}")


def _missing(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"SNIPPETS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def require_services(*names: str) -> None:
    """Skip (or, under SNIPPETS_REQUIRE_SERVICES=1, fail) unless every named service is up."""
    for name in names:
        if reason := service_missing(name):
            _missing(reason)


def require_tool(name: str, argv: list[str]) -> None:
    """Skip (or fail, under SNIPPETS_REQUIRE_SERVICES=1) unless `argv` runs and exits 0."""
    try:
        ok = subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        _missing(f"{name} is not available (`{shlex.join(argv)}` failed)")
