"""The mutation runner (tests/mutants.py, ``nox -s mutants``) mutates what the pages show as the
pattern, nothing else, and leaves the snippet files as they were; its committed results and
equivalent mutants name real pages and mutants. No worker: the runs themselves are the session's.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import uuid

import pytest

from tests import mutants, mutants_order
from tests.results import table_rows

pytestmark = pytest.mark.once  # the sources and results files only: no broker, no Django


def keys(page: str) -> set[str]:
    return {m.key for m in mutants.page_mutants(page)}


def test_task_options_are_mutated_where_the_pattern_sets_them():
    """acks_late, retry_on_worker_lost and max_retries of the pattern each get a mutant."""
    found = keys("error-handling/worker-loss")
    section = "snippets/error_handling/worker_loss.py:pattern"
    for what in (
        "acks_late=True -> False",
        "retry_on_worker_lost=True -> False",
        "max_retries=3 -> 0",
    ):
        assert f"{section}: {what}" in found


def test_anti_patterns_parameter_defaults_and_models_are_not_mutated():
    """The early-ack anti-pattern, parameter defaults (a test's knobs) and models.py stay as
    shown."""
    found = mutants.page_mutants("error-handling/worker-loss")
    assert not [m for m in found if m.section == "early_ack" or m.path.endswith("models.py")]
    knobs = mutants.Finder({1})
    knobs.visit(ast.parse("def f(key, pause=0.0, crash=False, limit=3): pass\n"))
    assert knobs.found == []
    idempotency = mutants.page_sections("task-design/idempotency")
    assert "antipattern" not in idempotency["snippets/task_design/idempotency.py"]
    assert "snippets/task_design/models.py" not in idempotency


def test_settings_strings_and_dict_entries_are_mutated_outside_functions():
    """Module-level settings: a string changed, a dict entry dropped, a setting deleted."""
    source = (
        "# --8<-- [start:s]\n"
        'CELERY_ACCEPT_CONTENT = ["json"]\n'
        'OPTIONS = {"visibility_timeout": 3600}\n'
        "def f(x):\n"
        '    """Doc."""\n'
        '    return x == "json"\n'
        "# --8<-- [end:s]\n"
    )
    finder = mutants.Finder(set(mutants.section_lines(source)["s"]))
    finder.visit(ast.parse(source))
    what = {w for _, _, w, _ in finder.found}
    assert "'json' -> 'json-mutant'" in what  # in a setting
    assert "drop 'visibility_timeout' from a dict" in what
    assert "delete CELERY_ACCEPT_CONTENT" in what
    assert "x == 'json' -> x != 'json'" in what
    assert not [w for w in what if "Doc" in w]  # no docstring, no string in a body


def test_applying_a_mutant_changes_the_file_and_restores_it(tmp_path, monkeypatch):
    """The mutant is written in place (subprocess workers import it) and undone, even on error."""
    monkeypatch.setattr(mutants, "ROOT", tmp_path)
    path = tmp_path / "m.py"
    path.write_text("# --8<-- [start:p]\nACKS_LATE = True\n# --8<-- [end:p]\n")
    original = path.read_bytes()
    [flip] = [m for m in mutants.mutants_of("m.py", {"p"}) if "False" in m.what]
    with pytest.raises(RuntimeError), mutants.applied(flip):
        assert "ACKS_LATE = False" in path.read_text()
        raise RuntimeError
    assert path.read_bytes() == original


def test_every_equivalent_names_a_current_mutant_with_a_reason():
    """A stale entry (the code changed) or a bare one would hide a mutant without saying why."""
    listed = tomllib.loads(mutants.EQUIVALENT.read_text())["equivalent"]
    paths = {key.partition(":")[0] for key in listed}  # only the files they name: a page's
    current = {  # mutants take seconds to list, every page's nearly a minute on a loaded CI
        m.key
        for page in mutants.pattern_pages()
        for path, sections in mutants.page_sections(page).items()
        if path in paths
        for m in mutants.mutants_of(path, sections)
    }
    assert set(listed) <= current
    assert all(reason.strip() for reason in listed.values())


def test_results_rows_are_pattern_pages_with_their_mutant_details():
    """Each row of mutants-results.txt is a pattern page with its JSON of every mutant."""
    pages = set(mutants.pattern_pages())
    *rows, total = table_rows(mutants.RESULTS)
    for row in rows:
        page = row.strip("| ").split(" | ")[0]
        assert page in pages
        assert (mutants.DETAILS / f"{page}.json").is_file()
    assert total.startswith(f"| {mutants.TOTAL} ({len(rows)}) |")


def test_the_last_row_adds_up_the_pages_and_their_wall_times():
    """A full run is the pages in sequence: its counts and wall time are the rows' sums."""
    *rows, total = [r.strip("| ").split(" | ") for r in table_rows(mutants.RESULTS)]
    for column in range(2, 9):
        if column != 7:  # Killed %: of the sums, not a sum
            assert int(total[column]) == sum(int(r[column]) for r in rows)
    live = int(total[2]) - int(total[5])
    assert total[7] == f"{100 * (int(total[3]) + int(total[6])) / live:.0f}"
    assert total[9] == f"sum of the rows: {int(total[8]) / 3600:.1f} h"


def test_deleting_a_setting_stated_at_celerys_default_is_equivalent():
    """CELERY_TASK_SERIALIZER = "json" is the default, stated; CELERY_TASK_ACKS_LATE is not."""
    found = {
        m.what: m.equivalent for m in mutants.page_mutants("configuration/production-settings")
    }
    assert "celery.app.defaults" in found["delete CELERY_TASK_SERIALIZER"]
    assert found["delete CELERY_TASK_ACKS_LATE"] == ""


def test_kill_first_moves_the_named_tests_to_the_front_and_keeps_the_rest():
    """The named tests first, in the given order; the others in pytest's order; unknown ids
    ignored; nothing dropped."""

    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    items = [Item(f"t.py::test_{n}") for n in "abcde"]
    first = ["t.py::test_d", "t.py::gone", "t.py::test_b"]
    ordered = [i.nodeid[-1] for i in mutants_order.kill_first(items, first)]
    assert ordered == ["d", "b", "a", "c", "e"]


def test_a_mutant_run_collects_the_killers_first(tmp_path):
    """The plugin as the runner loads it (-p, environment), after pytest's and pytest-django's
    own reordering: this module's last test is collected first, the rest in file order."""
    module = "tests/test_mutants.py"
    last = f"{module}::test_a_mutant_run_collects_the_killers_first"
    env = {**os.environ, mutants_order.FIRST: last, mutants_order.FAILED: str(tmp_path / "f")}
    argv = [sys.executable, "-m", "pytest", module, "--collect-only", "-q", "-p", "no:cov",
            "-p", "no:cacheprovider", "-p", "tests.mutants_order"]  # fmt: skip
    run = subprocess.run(argv, cwd=mutants.ROOT, env=env, capture_output=True, text=True)
    collected = [line for line in run.stdout.splitlines() if line.startswith(module)]
    assert collected[0] == last
    assert collected[1:] == [n for n in sorted(collected, key=order_in_file) if n != last]
    assert len(collected) > 5


def order_in_file(nodeid: str) -> int:
    source = (mutants.ROOT / "tests" / "test_mutants.py").read_text()
    return source.index(f"def {nodeid.split('::')[1]}(")


def test_the_killers_of_a_last_run_come_most_kills_first():
    """From a page's JSON: tests only (no collection error, no captured log line)."""
    results = [
        {"by": "FAILED tests/a.py::test_x"},
        {"by": "ERROR tests/a.py::test_y"},
        {"by": "FAILED tests/a.py::test_y"},
        {"by": "ERROR tests/a.py"},
        {"by": "ERROR    snippets.tasks:failure_logging.py:44 task failed"},
        {},
    ]
    assert mutants.killers(results) == ["tests/a.py::test_y", "tests/a.py::test_x"]


@pytest.mark.services("postgres")
def test_each_test_run_gets_new_databases_copied_from_the_migrated_templates(monkeypatch):
    """tests/mutants_db.py: the test databases are migrated once, and every run gets copies of
    its own: what a run leaves (a row, a table, a connection still open) is not in the next
    one's, the migrations' rows are; nothing is left after the page. On databases named for
    this test, not the session's."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from tests import mutants_db

    base = f"mutants_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SNIPPETS_DEFAULT_DB_NAME", base)
    monkeypatch.setenv("SNIPPETS_OTHER_DB_NAME", f"{base}_other")
    url = os.environ["DATABASE_URL"]

    def connect(name: str) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(url, dbname=name), autocommit=True)

    def rows(connection: psycopg.Connection, query: str) -> int:
        return connection.execute(query).fetchone()[0]

    with mutants_db.templates() as fresh:
        first = fresh()
        assert first["SNIPPETS_DEFAULT_DB_NAME"].startswith(base)
        left = connect(f"test_{first['SNIPPETS_DEFAULT_DB_NAME']}")  # a worker still connected
        migrations = rows(left, "SELECT count(*) FROM django_migrations")
        assert migrations > 0
        left.execute("INSERT INTO auth_group (name) VALUES ('leftover')")
        left.execute("CREATE TABLE leftover (id int)")

        second = fresh()
        assert set(second.values()).isdisjoint(first.values())
        with connect(f"test_{second['SNIPPETS_DEFAULT_DB_NAME']}") as run:
            assert rows(run, "SELECT count(*) FROM auth_group") == 0
            assert rows(run, "SELECT to_regclass('leftover') IS NULL")
            assert rows(run, "SELECT count(*) FROM django_migrations") == migrations
    left.close()  # closed by the server already: the copies were dropped WITH (FORCE)
    with connect("postgres") as server:
        assert not rows(server, f"SELECT count(*) FROM pg_database WHERE datname LIKE '%{base}%'")
