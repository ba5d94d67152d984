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


@contextlib.contextmanager
def flushing_by_delete() -> Iterator[None]:
    """A transactional test's flush empties PostgreSQL's tables with DELETE, not TRUNCATE.

    Django's `flush` (what pytest-django runs after each transactional test, for each of its
    databases) sends one `TRUNCATE` of every table (django/db/backends/postgresql/
    operations.py, `sql_flush`). TRUNCATE gives each table and index new files and drops the
    old ones from the buffer pool: measured on the 45 tables of a test database, 270-330 ms
    per flush with or without fsync, against 10-20 ms for a DELETE of each, the tables a
    test leaves holding a few rows. The tables end as empty either way, sequences untouched
    either way (Django resets them only when asked, and then this keeps TRUNCATE ... RESTART
    IDENTITY, as it keeps CASCADE when asked for that). The DELETEs run in the flush's one
    transaction with the foreign keys deferred (Django creates them DEFERRABLE INITIALLY
    DEFERRED), so their order does not matter. Only the test process flushes: workers never
    do."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if not tables or reset_sequences or allow_cascade:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        deletes = [f"DELETE FROM {self.quote_name(table)};" for table in tables]
        return ["SET CONSTRAINTS ALL DEFERRED;", *deletes]

    DatabaseOperations.sql_flush = sql_flush
    try:
        yield
    finally:
        DatabaseOperations.sql_flush = truncate
