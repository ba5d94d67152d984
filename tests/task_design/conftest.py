"""Fixtures of the task design proofs."""

from __future__ import annotations

import time

import pytest

from tests.harness.celery import running_worker
from tests.harness.services import require_services


@pytest.fixture
def unique_key(request) -> str:
    return f"{request.node.name[:60]}-{time.time_ns()}"


@pytest.fixture(scope="session")
def shared_prefork_worker(celery_app, django_db_setup, tmp_path_factory):
    """One real prefork worker (3 children) for the section's tests that may share it.

    Starting a worker subprocess costs seconds; tests that only need *a* prefork worker (and
    may SIGKILL one of its children: the pool replaces it) share this one. Publish to its
    queue. Tests that need special settings start their own with `worker_process`.
    """
    require_services("broker")
    log_dir = tmp_path_factory.mktemp("td-worker")
    with running_worker(celery_app, log_dir, concurrency=3, name="td-shared") as wp:
        yield wp
