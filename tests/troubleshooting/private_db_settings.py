"""Settings of a worker whose default database is a private PostgreSQL cluster (TS_PG_PORT),
the prefork DATABASES entry (TS_PREFORK_DATABASE=1) and the gevent one (TS_GEVENT_POOL_SIZE) of
the pages, as the proof sets them."""

import json
import os

from snippets.project.settings import *  # noqa: F403
from snippets.project.settings import DATABASES
from snippets.troubleshooting.async_pools import for_gevent_workers
from snippets.troubleshooting.database_connections import for_prefork_workers

DATABASES["default"] = {
    **DATABASES["default"],
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "postgres",
    "USER": "postgres",
    "PASSWORD": "",
    "HOST": "127.0.0.1",
    "PORT": os.environ["TS_PG_PORT"],
    # What a web process keeps (Django refuses it with a pool): the workers' fixup ignores it.
    "CONN_MAX_AGE": 0 if "TS_DB_POOL" in os.environ else 600,
    "OPTIONS": {"pool": json.loads(os.environ["TS_DB_POOL"])} if "TS_DB_POOL" in os.environ else {},
}
if os.environ.get("TS_PREFORK_DATABASE") == "1":
    DATABASES = {alias: for_prefork_workers(db) for alias, db in DATABASES.items()}
if size := os.environ.get("TS_GEVENT_POOL_SIZE"):
    DATABASES = {alias: for_gevent_workers(db, int(size)) for alias, db in DATABASES.items()}
