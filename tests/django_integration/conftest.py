"""Fixtures of the Django integration proofs.

The redelivery proofs use the session's `shared_prefork_worker` (tests/conftest.py): a
`celery worker` subprocess as the recommended deployment starts it.
"""

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "django6: needs django.tasks (Django 6.0+); deselected, with a note, on older"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the django.tasks proofs on a Django without django.tasks."""
    import django

    if django.VERSION >= (6, 0):
        return
    deselected = [item for item in items if item.get_closest_marker("django6")]
    if not deselected:
        return
    items[:] = [item for item in items if not item.get_closest_marker("django6")]
    config.hook.pytest_deselected(items=deselected)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    note = (
        f"django-integration: {len(deselected)} django.tasks test(s) deselected: "
        f"Django {django.get_version()} has no django.tasks (new in 6.0); "
        "they run on the Django 6.1 session"
    )
    if reporter is not None:
        reporter.write_line(note, yellow=True)
