"""Fixtures of the Configuration proofs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.celery import WorkerProcess, running_worker
from tests.harness.services import require_services


@pytest.fixture(scope="session")
def shared_prefork_worker(celery_app, django_db_setup, tmp_path_factory) -> Iterator[WorkerProcess]:
    """One real prefork worker (2 children) for the section's tests that may share it.

    Tests that need other settings, queues or pool sizes start their own with
    `worker_process`; the redelivery proofs only need *a* worker started as the recommended
    deployment starts it. Publish to its queue.
    """
    require_services("broker")
    log_dir = tmp_path_factory.mktemp("cfg-worker")
    with running_worker(celery_app, log_dir, concurrency=2, name="cfg-shared") as wp:
        yield wp
