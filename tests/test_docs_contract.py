"""The contract between docs/ and snippets/ (a line scanner, not a markdown parser).

Every fence in docs/ only includes from snippets/ (mermaid aside); every include resolves to
a file and a section; every section marker in snippets/ is shown by some page; every snippet
file is named by a page; the strict build fails on a missing include. (What the built HTML
holds is checked on the one build the site's tests share: tests/site/test_site.py.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
DOCS, SNIPPETS = ROOT / "docs", ROOT / "snippets"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<tick>`{3,}|~{3,})\s*\{?\.?(?P<lang>[\w+-]*)")
INCLUDE = re.compile(
    r"""^\s*-{1,}8<-{1,}\s+["'](?P<path>[^"':]+)(?::(?P<section>[\w-]+))?["']\s*$"""
)
MARKER = re.compile(r"--8<-- \[(?P<kind>start|end):(?P<name>[\w-]+)\]")
NOT_SHOWN = {"__init__.py", "apps.py"}  # package plumbing, never a page's code


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def fences(page: Path):
    """(line number, language, body lines) of every fenced block of a page."""
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        if m := FENCE.match(lines[i]):
            start, tick, body = i + 1, m["tick"], []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(tick):
                body.append(lines[i])
                i += 1
            yield start, m["lang"].lower(), body
        i += 1


def includes() -> list[tuple[Path, int, str, str | None]]:
    found = []
    for page in pages():
        for line_no, lang, body in fences(page):
            if lang == "mermaid":
                continue
            for line in body:
                if m := INCLUDE.match(line):
                    found.append((page, line_no, m["path"], m["section"]))
    return found


def sections(path: Path) -> set[str]:
    names = [m["name"] for m in MARKER.finditer(path.read_text()) if m["kind"] == "start"]
    return set(names)


def snippet_files() -> list[Path]:
    return sorted(
        p
        for p in SNIPPETS.rglob("*")
        if p.is_file()
        and p.name not in NOT_SHOWN
        and "migrations" not in p.parts
        and "__pycache__" not in p.parts
    )


def test_every_fence_only_includes_from_snippets():
    offenders = []
    for page in pages():
        for line_no, lang, body in fences(page):
            content = [b for b in body if b.strip()]
            if lang == "mermaid":
                continue
            if not content or not all(INCLUDE.match(b) for b in content):
                offenders.append(f"{page.relative_to(ROOT)}:{line_no}")
    assert offenders == [], "code typed into a page instead of included from snippets/"


def test_every_include_resolves_to_a_file_and_section():
    broken = []
    for page, line_no, path, section in includes():
        file = ROOT / path
        where = f"{page.relative_to(ROOT)}:{line_no}"
        if not path.startswith("snippets/") or not file.is_file():
            broken.append(f"{where}: {path}")
        elif section and section not in sections(file):
            broken.append(f"{where}: {path}:{section}")
    assert broken == []


def test_every_section_marker_is_balanced_and_shown_on_a_page():
    shown = {(path, section) for _page, _line, path, section in includes()}
    unshown = []
    for file in snippet_files():
        text = file.read_text(errors="replace")
        starts = [m["name"] for m in MARKER.finditer(text) if m["kind"] == "start"]
        ends = [m["name"] for m in MARKER.finditer(text) if m["kind"] == "end"]
        assert sorted(starts) == sorted(ends), f"unbalanced markers in {file}"
        rel = str(file.relative_to(ROOT))
        unshown += [
            f"{rel}:{s}" for s in starts if (rel, s) not in shown and (rel, None) not in shown
        ]
    assert unshown == [], "sections no page shows"


def test_every_snippet_file_is_named_by_a_page():
    named = {path for _page, _line, path, _section in includes()}
    corpus = "\n".join(p.read_text() for p in pages())
    unnamed = [
        str(f.relative_to(ROOT))
        for f in snippet_files()
        if str(f.relative_to(ROOT)) not in named and str(f.relative_to(ROOT)) not in corpus
    ]
    assert unnamed == []


def test_mirror_rule_every_page_has_its_snippet_and_test():
    """docs/<section>/<page>.md <-> snippets/<pkg>/<page>.py <-> tests/<pkg>/test_<page>.py
    (docs/reference/ is generated, checked by tests/test_facts.py)."""
    missing = []
    for page in pages():
        rel = page.relative_to(DOCS)
        if len(rel.parts) != 2 or rel.name == "index.md" or rel.parts[0] == "reference":
            continue  # reference/: generated from the installed Celery, no pattern to prove
        pkg, stem = rel.parts[0].replace("-", "_"), rel.stem.replace("-", "_")
        for need in (SNIPPETS / pkg / f"{stem}.py", ROOT / "tests" / pkg / f"test_{stem}.py"):
            if not need.is_file():
                missing.append(f"{rel} needs {need.relative_to(ROOT)}")
    assert missing == []


def mkdocs(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


def test_a_missing_include_fails_the_strict_build(tmp_path):
    """check_paths: true — a page that names a missing section does not build."""
    pytest.importorskip("mkdocs")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copytree(
        ROOT / "snippets", copy / "snippets", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "django-integration" / "transactions.md"
    page.write_text(page.read_text().replace(':pattern"', ':no_such_section"', 1))
    result = mkdocs("build", "--strict", "--site-dir", str(tmp_path / "out"), cwd=copy)
    assert result.returncode != 0
    assert "no_such_section" in result.stderr or "Snippet" in result.stderr
