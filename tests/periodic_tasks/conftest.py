"""Fixtures of the periodic-tasks proofs: real `celery beat` subprocesses and their queues."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from itertools import count

import pytest

from tests.harness.celery import BeatProcess, delete_queues, running_beat
from tests.harness.services import require_services


@pytest.fixture
def beat_process(tmp_path) -> Iterator[Callable[..., BeatProcess]]:
    """Factory: start a real `celery beat`; every one is stopped after the test.

    ``beat_process(schedule={...}, scheduler=None, max_interval=1, schedule_file=None, env={})``
    (see ``tests.harness.celery.start_beat``);
    ``schedule`` is the JSON form read by tests/periodic_tasks/beat_settings.py.
    """
    require_services("broker")
    started = count()
    with ExitStack() as stack:

        def start(
            schedule: dict | None = None,
            env: dict[str, str] | None = None,
            **options: object,
        ) -> BeatProcess:
            env = {
                "DJANGO_SETTINGS_MODULE": "tests.periodic_tasks.beat_settings",
                "PERIODIC_TEST_SCHEDULE": json.dumps(schedule or {}),
                **(env or {}),
            }
            name = f"beat{next(started)}-{uuid.uuid4().hex[:6]}"
            beat = running_beat(tmp_path, name=name, env=env, **options)
            return stack.enter_context(beat)

        yield start


@pytest.fixture
def queue_name(request, celery_app) -> Iterator[str]:
    """A queue of this test's own, for the periodic sends; deleted after the test."""
    name = f"periodic-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
    yield name
    delete_queues(celery_app, name)
