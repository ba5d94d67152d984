"""Database helpers shared by the proofs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.db import models


class Rollback(Exception):
    """Raised inside ``transaction.atomic()`` to roll the surrounding transaction back."""


@contextlib.contextmanager
def row_locked(row: models.Model) -> Iterator[None]:
    """Hold the row's lock (``SELECT ... FOR UPDATE``) from another connection, as a slow
    transaction elsewhere would, until the block ends: a write to that row waits inside the
    database meanwhile (plain reads do not). PostgreSQL; SQLite has no row locks."""
    from django.db import connections

    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            table = other.ops.quote_name(row._meta.db_table)
            cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [row.pk])
        yield
    finally:
        other.rollback()
        other.close()


def unstick_connections() -> list[str]:
    """Cancel and close every Django connection left with a query running; their aliases.

    pytest-timeout's signal method raises `Failed` wherever the test is, also inside psycopg's
    wait for a query's result. psycopg cancels the query only on KeyboardInterrupt or SystemExit
    (`_INTERRUPTED`, psycopg/connection.py `Connection.wait`), so the connection stays ACTIVE and
    every later test of that xdist process fails with "another command is already in progress"
    (R2 of stop 27: one timeout, 109 errors). Closed, Django opens a fresh one when next used.
    """
    from django.db import connections
    from psycopg.pq import TransactionStatus

    unstuck = []
    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        pgconn = getattr(raw, "pgconn", None)
        if pgconn is None or pgconn.transaction_status != TransactionStatus.ACTIVE:
            continue
        raw.cancel_safe(timeout=5)
        conn.close()
        unstuck.append(conn.alias)
    return unstuck
