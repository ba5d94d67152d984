"""Fixtures of the periodic-tasks proofs: their queues (`beat_process`: tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness.celery import delete_queues


@pytest.fixture
def queue_name(request, celery_app) -> Iterator[str]:
    """A queue of this test's own, for the periodic sends; deleted after the test."""
    name = f"periodic-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
    yield name
    delete_queues(celery_app, name)
