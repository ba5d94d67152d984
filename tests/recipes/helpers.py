"""Helpers of the recipes tests: a "web process" subprocess, ids the outside world controls."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import strategies as st

from tests.configuration.helpers import settings_env
from tests.harness.celery import worker_env
from tests.harness.process import ROOT


def run_web_process(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Django process (the web server) on the test databases."""
    script = "import django\ndjango.setup()\n" + code
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=worker_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


RECIPE_WORKER = pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=settings_override(production, default queue, EMAIL settings, "
    "PAYMENTS_URL)",
    reason="recipe_worker_settings(): the worker's private queue is the default queue, so the "
    "steps it publishes come back to it; the EMAIL settings and PAYMENTS_URL point at the "
    "test's SMTP server and payment provider, in the tests that have them",
)
"""The deviation of every worker started with `recipe_worker_settings()` (the Proof lists show
it, docs/hooks/proofs.py); a test that overrides more declares that in a mark of its own."""


def recipe_worker_settings(queue: str, smtp: object = None, **overrides: object) -> dict:
    """`worker_process(env=...)` for a recipe's worker: the production settings, with `queue` as
    the default queue (so the steps the worker publishes come back to it) and, given `smtp`
    (the `smtp_server` fixture), Django's SMTP backend pointed at that server."""
    if smtp is not None:
        overrides |= {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": smtp.host,
            "EMAIL_PORT": smtp.port,
            "EMAIL_USE_TLS": False,
            "EMAIL_USE_SSL": False,
        }
    return settings_env(
        "snippets.production.settings", CELERY_TASK_DEFAULT_QUEUE=queue, **overrides
    )


# Property-based: ids the outside world controls (a URL, a message someone else published).
BAD_IDS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def coerces_to(value: object, pk: int) -> bool:
    """Django's IntegerField prepares a lookup value with int(): "7", 7.9 and True match."""
    try:
        return int(value) == pk
    except (TypeError, ValueError, OverflowError):
        return False


def uploader(username: str = "uploader"):
    """The user who uploads the test's files (the progress view shows a job to its owner only)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get_or_create(username=username)[0]
