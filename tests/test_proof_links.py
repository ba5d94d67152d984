"""Proof lists: every test a page names exists, and each Proof list is generated from the tests.

A page names a test of its mirror module bare (`test_name`) and any other test with its path
(`tests/<pkg>/test_<page>.py::test_name`). The list itself is ``<!-- proof -->``, expanded by
docs/hooks/proofs.py from the mirror module at build time.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from docs.hooks import proofs

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BARE = re.compile(r"(?<![:\w])`(test_\w+)(?:\[[^\]`]*\])?`")
QUALIFIED = re.compile(r"`((?:tests|snippets)/[\w/]+\.py)::(test_\w+)(?:\[[^\]`]*\])?`")


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def defined_in(module: Path) -> set[str]:
    if not module.is_file():
        return set()
    tree = ast.parse(module.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def mirror_snippet(page: Path) -> Path:
    """docs/<section>/<page>.md -> snippets/<pkg>/<page>.py (testing.md's snippet holds tests)."""
    *dirs, stem = (p.replace("-", "_") for p in page.relative_to(DOCS).with_suffix("").parts)
    return ROOT.joinpath("snippets", *dirs, f"{stem}.py")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_test_a_page_names_exists(page):
    """Bare names live in the page's mirror test module (or its snippet); qualified ones in the
    module they name."""
    text = page.read_text()
    module = proofs.mirror_test_module(page.relative_to(DOCS).as_posix())
    known = defined_in(module) | defined_in(mirror_snippet(page))
    missing = sorted(set(BARE.findall(text)) - known)
    assert missing == [], f"{page.name} names tests that {module.relative_to(ROOT)} lacks"
    for path, name in QUALIFIED.findall(text):
        assert name in defined_in(ROOT / path), f"{page.name}: {path}::{name} does not exist"


def pattern_pages() -> list[Path]:
    """Section pages with a mirror test module (the mirror rule's pages)."""
    return [
        p
        for p in pages()
        if len(p.relative_to(DOCS).parts) == 2
        and p.name != "index.md"
        and proofs.mirror_test_module(p.relative_to(DOCS).as_posix()).is_file()
    ]


@pytest.mark.parametrize("page", pattern_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_pattern_page_generates_its_proof_list(page):
    """The Proof section lists its tests through the placeholder, not by hand."""
    text = page.read_text()
    proof = re.search(r"^## Proof\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert proof, f"{page.name} has no Proof section"
    assert proofs.PROOF in proof[1], f"{page.name}: the Proof list is typed, not generated"
    typed = re.findall(r"^[ \t]*- .*`test_\w+", proof[1], re.M)
    assert typed == [], f"{page.name}: a hand-typed test bullet beside the generated list"


MODULE = '''
import pytest

pytestmark = [pytest.mark.deviation("a private queue", reason="isolation from other tests")]


def helper():
    """Not a test."""


@pytest.mark.deviation("soft_shutdown_timeout=2", reason="keeps the run short")
def test_first(worker_process):
    """Kills the child; the key holds.

    Details that stay in the source.
    """


def test_second():
    pass
'''


def test_the_hook_lists_tests_in_file_order_with_summary_and_deviations(tmp_path):
    """What the hook renders from a module: names in order, first docstring paragraph, the
    module's and the test's deviation marks, and a source link only when repo_url is set."""
    module = tmp_path / "test_page.py"
    module.write_text(MODULE)
    rendered = proofs.proof_list(module, {}, harness=tmp_path / "no-harness.py")
    assert rendered.splitlines() == [
        "- `test_first` — Kills the child; the key holds.",
        "    - *Deviation:* a private queue (isolation from other tests)",
        "    - *Deviation:* soft_shutdown_timeout=2 (keeps the run short)",
        "- `test_second`",
        "    - *Deviation:* a private queue (isolation from other tests)",
    ]


BOUND = '''
import pytest

from tests.recipes.helpers import RECIPE_WORKER

solo = pytest.mark.deviation("--pool=solo", reason="one process")
pytestmark = [pytest.mark.django_db, solo]


@RECIPE_WORKER
def test_first(worker_process):
    """Runs a recipe's worker."""
'''


def test_the_hook_reads_a_mark_bound_to_a_name_here_or_in_a_tests_helper(tmp_path):
    """A deviation mark given a name (``solo = pytest.mark.deviation(...)``, or
    ``RECIPE_WORKER``, imported from tests/recipes/helpers.py) is listed like one spelt out."""
    module = tmp_path / "test_page.py"
    module.write_text(BOUND)
    [proof] = proofs.proofs(module)
    assert proof.deviations[0] == ("--pool=solo", "one process")
    [(what, why)] = proof.deviations[1:]
    assert what.startswith("DJANGO_SETTINGS_MODULE=settings_override(production, default queue")
    assert why.startswith("recipe_worker_settings(): ")


DECORATOR = '''
import pytest

from tests.troubleshooting.test_database_connections import settings_deviation


def own(test):
    return pytest.mark.deviation("--pool=threads", reason="the page's pool")(test)


FILES = [pytest.mark.deviation("CELERY_LIVENESS_FILE", reason="in tmp_path")]


def files(test):
    for mark in FILES:
        test = mark(test)
    return test


@own
@files
@settings_deviation
def test_first(worker_process):
    """Runs a worker on a private cluster."""
'''


def test_the_hook_reads_the_marks_a_decorator_function_applies(tmp_path):
    """A function that applies deviation marks (``@settings_deviation``, or ``@files``, which
    applies a list of them), in the module or imported from another test module, stands for
    those marks on the page."""
    module = tmp_path / "test_page.py"
    module.write_text(DECORATOR)
    [proof] = proofs.proofs(module)
    assert [what for what, _ in proof.deviations] == [
        "--pool=threads",
        "CELERY_LIVENESS_FILE",
        "DJANGO_SETTINGS_MODULE=tests.troubleshooting.private_db_settings",
        "TS_PG_PORT",
    ]


FSTRING = '''
import pytest

LONG = 60.0
NAME = "SNIPPETS_REST_OF_TASK_SECONDS"
long_rest = pytest.mark.deviation(f"{NAME}={LONG:g}", reason=f"takes {LONG:g} s")


@long_rest
@pytest.mark.deviation(f"X={undefined()}", reason=NAME)
def test_first(worker_process):
    """Runs a worker whose stand-in takes a minute."""
'''


def test_the_hook_shows_an_f_string_mark_of_the_module_constants_as_its_value(tmp_path):
    """``deviation(f"{NAME}={LONG:g}")`` is listed as Python evaluates it (the idempotency
    page once showed the source text ``f'SNIPPETS_REST_OF_TASK_SECONDS={LONG:g}'``); an
    f-string of anything but constants stays source."""
    module = tmp_path / "test_page.py"
    module.write_text(FSTRING)
    [proof] = proofs.proofs(module)
    assert proof.deviations == [
        ("SNIPPETS_REST_OF_TASK_SECONDS=60", "takes 60 s"),
        ("f'X={undefined()}'", "SNIPPETS_REST_OF_TASK_SECONDS"),
    ]


def test_the_hook_links_each_test_to_its_source_when_repo_url_is_set():
    module = ROOT / "tests" / "task_design" / "test_idempotency.py"
    config = {"repo_url": "https://github.com/example/site/", "edit_uri": "edit/trunk/docs/"}
    first = proofs.proof_list(module, config).splitlines()[0]
    line = next(p.line for p in proofs.proofs(module))
    url = (
        f"https://github.com/example/site/blob/trunk/tests/task_design/test_idempotency.py#L{line}"
    )
    assert first.startswith(f"- [`{proofs.proofs(module)[0].name}`]({url})")


def test_the_mirror_of_a_page_is_its_test_module():
    assert proofs.mirror_test_module("task-design/idempotency.md") == (
        ROOT / "tests" / "task_design" / "test_idempotency.py"
    )
    assert proofs.mirror_test_module("checklist.md") == ROOT / "tests" / "test_checklist.py"


def test_the_hook_adds_the_harness_wide_deviations_when_the_tests_start_workers(tmp_path):
    """HARNESS_DEVIATIONS (tests/harness/deployment.py) follow a list whose tests start worker
    subprocesses, and only such a list; without the harness file there are none."""
    harness = tmp_path / "deployment.py"
    harness.write_text('HARNESS_DEVIATIONS: dict[str, str] = {"--queues": "a private queue"}\n')
    module = tmp_path / "test_page.py"
    module.write_text(MODULE)
    assert proofs.proof_list(module, {}, harness).endswith("- `--queues` — a private queue")
    module.write_text(MODULE.replace("(worker_process)", "()"))
    assert "--queues" not in proofs.proof_list(module, {}, harness)
    assert proofs.harness_deviations(tmp_path / "absent.py") == {}


def test_the_hook_counts_a_module_fixture_that_starts_a_worker(tmp_path):
    """A module's own shared worker (a fixture calling `running_worker`, or one built on a
    worker fixture), or a test calling `running_worker` itself, starts a worker subprocess too:
    the harness-wide deviations follow (tests/troubleshooting/test_worker_processes.py's
    `worker` was missed by the fixture names alone)."""
    harness = tmp_path / "deployment.py"
    harness.write_text('HARNESS_DEVIATIONS = {"--queues": "a private queue"}\n')
    module = tmp_path / "test_page.py"
    own = (
        "@pytest.fixture(scope='module')\ndef worker(celery_app):\n"
        "    with running_worker(celery_app):\n        yield\n\n\n"
    )
    built_on = "@pytest.fixture\ndef busy(worker):\n    return worker\n\n\n"
    for source in (
        MODULE.replace("def test_first(worker_process)", own + "def test_first(worker)"),
        MODULE.replace("def test_first(worker_process)", own + built_on + "def test_first(busy)"),
        MODULE.replace("(worker_process):", "():\n    running_worker()"),
    ):
        module.write_text(source)
        assert proofs.proof_list(module, {}, harness).endswith("- `--queues` — a private queue")
    not_a_worker = "@pytest.fixture\ndef worker():\n    return None\n\n\n"
    module.write_text(
        MODULE.replace("def test_first(worker_process)", not_a_worker + "def test_first(worker)")
    )
    assert "--queues" not in proofs.proof_list(module, {}, harness)


def test_the_hook_adds_the_beat_wide_deviations_when_the_tests_start_beat(tmp_path):
    """BEAT_HARNESS_DEVIATIONS follow a list whose tests start beat subprocesses (the
    `beat_process` fixture, or the harness's `running_beat`/`start_beat`), and only such a
    list; the worker-wide ones only where workers start."""
    harness = tmp_path / "deployment.py"
    harness.write_text(
        'HARNESS_DEVIATIONS = {"--queues": "a private queue"}\n'
        'BEAT_HARNESS_DEVIATIONS = {"--max-interval=1": "short proofs"}\n'
    )
    module = tmp_path / "test_page.py"
    beat_only = MODULE.replace("(worker_process)", "(beat_process)")
    for source in (beat_only, MODULE.replace("(worker_process):", "():\n    running_beat()")):
        module.write_text(source)
        rendered = proofs.proof_list(module, {}, harness)
        assert rendered.endswith(
            "Every beat subprocess these tests start also differs from "
            "the recommended deployment in (harness-wide):\n\n"
            "- `--max-interval=1` — short proofs"
        )
        assert "--queues" not in rendered
    module.write_text(MODULE)
    assert "--max-interval" not in proofs.proof_list(module, {}, harness)
