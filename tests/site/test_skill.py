"""The skill bundle (`nox -s skill`) is built from the same pages: every snippet section of the
site is in it, no include marker is left, and every reference SKILL.md names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"""^\s*-{1,}8<-{1,}\s+["'](?P<path>[^"':]+)(?::(?P<section>[\w-]+))?["']""")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("skill")
    subprocess.run([sys.executable, "docs/hooks/skill.py", str(out)], cwd=ROOT, check=True)
    return out


def bundle_text(bundle: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(bundle.rglob("*.md")))


def test_every_reference_named_by_skill_md_exists(bundle):
    named = re.findall(r"`(references/[\w-]+\.md)`", (bundle / "SKILL.md").read_text())
    assert len(named) >= 9
    assert [n for n in named if not (bundle / n).is_file()] == []


def test_no_include_marker_is_left(bundle):
    assert "--8<--" not in bundle_text(bundle)


def test_every_snippet_section_of_the_site_is_in_the_bundle(bundle):
    sys.path.insert(0, str(ROOT / "docs"))
    from hooks.includes import expand_lines

    text = bundle_text(bundle)
    missing = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for line in page.read_text().splitlines():
            if (m := INCLUDE.match(line)) and m["path"].startswith("snippets/"):
                code = "\n".join(expand_lines([line.strip()])).strip()
                if code and code not in text:
                    missing.append(f"{page.relative_to(ROOT)}: {m['path']}:{m['section']}")
    assert missing == []


def test_skill_md_carries_the_procedure_and_the_checklist(bundle):
    skill = (bundle / "SKILL.md").read_text()
    for step in ("Classify", "Read", "Implement", "Verify"):
        assert f": {step}" in skill
    assert "pass IDs, not model instances" in skill
    assert "python manage.py celery_audit" in skill  # issue 20: the audit, on an existing project
    assert skill.count("| `references/") == 8  # the seven sections and Troubleshooting
