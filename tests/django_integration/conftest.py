"""Fixtures of the Django integration proofs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import pytest
from kombu import Connection, pools


@pytest.fixture
def broker_down(celery_app):
    """A context manager: while it is open, every publish meets a refused connection.

    The producer pool is pointed at a closed port, so a publish goes through kombu's real
    connect-and-retry path and fails with the error a downed broker gives; leaving the block
    is the broker coming back. The worker's own connection is untouched.
    """
    scheme = "amqp" if celery_app.conf.broker_url.startswith(("amqp", "pyamqp")) else "redis"
    dead = Connection(
        "amqp://guest:guest@127.0.0.1:1//" if scheme == "amqp" else "redis://127.0.0.1:1/0",
        connect_timeout=1,
    )

    @contextlib.contextmanager
    def down() -> Iterator[None]:
        with mock.patch.object(celery_app.amqp, "_producer_pool", pools.producers[dead]):
            yield

    yield down
    dead.release()
