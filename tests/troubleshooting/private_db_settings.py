"""Settings of a worker whose default database is a private PostgreSQL cluster (TS_PG_PORT),
with CONN_MAX_AGE (TS_CONN_MAX_AGE), Django's connection pool (TS_DB_POOL, JSON: its options)
and the page's prefork DATABASES entry (TS_PREFORK_DATABASE=1) as the proof sets them."""

import json
import os

from snippets.project.settings import *  # noqa: F403
from snippets.project.settings import DATABASES
from snippets.troubleshooting.database_connections import for_prefork_workers

DATABASES["default"] = {
    **DATABASES["default"],
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "postgres",
    "USER": "postgres",
    "PASSWORD": "",
    "HOST": "127.0.0.1",
    "PORT": os.environ["TS_PG_PORT"],
    "CONN_MAX_AGE": int(os.environ.get("TS_CONN_MAX_AGE", "0")),
    "OPTIONS": {"pool": json.loads(os.environ["TS_DB_POOL"])} if "TS_DB_POOL" in os.environ else {},
}
if os.environ.get("TS_PREFORK_DATABASE") == "1":
    DATABASES = {alias: for_prefork_workers(db) for alias, db in DATABASES.items()}
