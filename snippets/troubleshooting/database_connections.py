"""PostgreSQL connections of Celery workers: what each worker process opens, a check of the
server's headroom, and the DATABASES entry prefork workers should run with."""

# --8<-- [start:task]
from celery import shared_task
from django.db import connection


@shared_task
def slow_query(seconds: float) -> int:
    """A query that keeps its connection busy for `seconds` (a report, a lock wait): read-only."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_sleep(%s)", [seconds])
        return cursor.fetchone()[0]


# --8<-- [end:task]

# --8<-- [start:headroom]
from django.db import connections


def connection_headroom(using: str = "default") -> int:
    """Sessions a new process may still open on this server: `max_connections`, minus the
    slots reserved for superusers, minus the client sessions open now (this one included)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"  # (1)!
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        return cursor.fetchone()[0]


# --8<-- [end:headroom]


# --8<-- [start:prefork-database]
def for_prefork_workers(database: dict) -> dict:
    """A DATABASES entry for prefork workers: no connection pool in each pool process."""
    options = {key: value for key, value in database.get("OPTIONS", {}).items() if key != "pool"}
    return {**database, "OPTIONS": options}  # (1)!


# the workers' settings module, after `from .settings import *`:
# DATABASES = {alias: for_prefork_workers(db) for alias, db in DATABASES.items()}
# --8<-- [end:prefork-database]
