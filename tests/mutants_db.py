"""The test databases of a mutation run (tests/mutants.py): migrated once per page, then a new
copy for each test run, so no mutant pays for creating and migrating them and none sees
another's rows.

A mutant's test run used to create its PostgreSQL test databases and run every migration into
them (pytest-django's default), then drop them: the largest part of a short run, for the same
schema every time (models.py and the migrations are never mutated, and no migration imports a
snippet). Instead Django creates and migrates them once per page, from the unmutated code, in a
subprocess (``python -m tests.mutants_db``), and they become templates. Each test run then gets
databases of its own, new names (``SNIPPETS_<ALIAS>_DB_NAME``, which the settings read) created
from the templates (``CREATE DATABASE ... TEMPLATE``, a copy of the files), which it uses with
``--reuse-db`` (pytest-django then only checks the migrations). A run therefore starts on
exactly what the migrations create, as before (same schema, same rows, sequences from 1), and
nothing a run leaves, not even a worker still connected, reaches the next. The copies of the
run before are dropped meanwhile, in a thread: a dropped database costs PostgreSQL a checkpoint,
seconds on a busy machine. Only PostgreSQL: on SQLite (no services) each run creates its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

TEMPLATE = "{name}_mutants_template"  # name: the test database's
CLONE = "{name}_m{n}"  # name: the settings' NAME (the test database is test_<that>)
PREFIX = "test_"  # django.db.backends.base.creation.TEST_DATABASE_PREFIX


def create_test_databases() -> dict[str, dict]:
    """(In the subprocess.) The test databases created and migrated as pytest-django creates
    them, left in place: {alias: connection parameters, NAME, the test database's name}; {}
    unless every database is PostgreSQL with the default test name."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippets.project.settings")  # pyproject's
    django.setup()
    from django.db import connections
    from django.test.utils import setup_databases

    if not all(
        connections[a].vendor == "postgresql" and not connections[a].settings_dict["TEST"]["NAME"]
        for a in connections
    ):
        return {}
    names = {alias: connections[alias].settings_dict["NAME"] for alias in connections}
    setup_databases(
        verbosity=0, interactive=False, aliases=set(connections), serialized_aliases=set()
    )
    found = {}
    for alias in connections:
        settings = connections[alias].settings_dict
        assert settings["NAME"] == PREFIX + names[alias], settings["NAME"]
        found[alias] = {
            "name": names[alias],
            "test": settings["NAME"],
            **{key.lower(): settings[key] or None for key in ("HOST", "PORT", "USER", "PASSWORD")},
        }
    connections.close_all()
    return found


def execute(database: dict, *statements: str) -> None:
    """The statements, each on its own, in the server's maintenance database."""
    import psycopg

    params = {key: database[key] for key in ("host", "port", "user", "password") if database[key]}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as connection:
        for statement in statements:
            connection.execute(statement)


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop(name: str) -> str:
    return f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)"


@contextlib.contextmanager
def templates() -> Iterator[Callable[[], dict[str, str]] | None]:
    """Migrated templates of the test databases while the block runs. Yields `fresh`: new test
    databases copied from the templates, and the environment that points a run at them (None
    on SQLite: nothing to do, each run creates its own). Every copy and template is dropped
    after."""
    argv = [sys.executable, "-m", "tests.mutants_db"]
    made = subprocess.run(argv, capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise SystemExit(f"creating the test databases failed:\n{made.stderr[-3000:]}")
    databases = json.loads(made.stdout.strip().splitlines()[-1])
    made_names: list[tuple[dict, str]] = []  # every database this block created
    old: list[tuple[dict, str]] = []  # the copies of the run before, to drop
    dropping: threading.Thread | None = None
    runs = 0

    def drop_all(names: list[tuple[dict, str]]) -> None:
        for database, name in names:
            execute(database, drop(name))

    def fresh() -> dict[str, str]:
        nonlocal runs, dropping
        runs += 1
        env, made_now = {}, []
        for alias, database in databases.items():
            name = CLONE.format(name=database["name"], n=runs)
            test, template = PREFIX + name, TEMPLATE.format(name=database["test"])
            execute(
                database, drop(test), f"CREATE DATABASE {quoted(test)} TEMPLATE {quoted(template)}"
            )
            made_now.append((database, test))
            env[f"SNIPPETS_{alias.upper()}_DB_NAME"] = name
        if dropping is not None:
            dropping.join()
        dropping = threading.Thread(target=drop_all, args=(old[:],), name="mutants-drop")
        dropping.start()
        old[:] = made_now
        made_names.extend(made_now)
        return env

    try:
        for database in databases.values():
            test, template = database["test"], TEMPLATE.format(name=database["test"])
            made_names.append((database, test))
            execute(
                database,
                drop(template),
                f"ALTER DATABASE {quoted(test)} RENAME TO {quoted(template)}",
            )
            made_names.append((database, template))
        yield fresh if databases else None
    finally:
        if dropping is not None:
            dropping.join()
        drop_all(made_names)


if __name__ == "__main__":
    print(json.dumps(create_test_databases()))
