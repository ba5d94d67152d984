"""Record what this process publishes, without a broker in the way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def recording_publishes() -> Iterator[list[dict]]:
    """Every task published inside the block: name, id, args, headers and message properties
    (priority...), in order."""
    from celery.signals import before_task_publish

    sent: list[dict] = []

    def record(sender=None, body=None, headers=None, properties=None, **_kw) -> None:
        sent.append(
            {
                "name": sender,
                "id": headers.get("id"),
                "args": list(body[0]),
                "headers": headers,
                "properties": properties or {},
            }
        )

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)
