"""Build the skill bundle from the site's own pages: `python docs/hooks/skill.py dist/skill`.

dist/skill/SKILL.md is the expert procedure (classify -> read -> implement -> verify) with the
category table; dist/skill/references/<category>.md holds each section's pages, in the order
of the site's navigation, with every snippet expanded (no include markers left).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hooks import proofs
from hooks.includes import ROOT, expand, mkdocs_config
from hooks.site import expand_generated

DOCS = ROOT / "docs"
FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
# Pages outside the seven sections that a reader of the skill needs too.
EXTRA = {
    "setup": ("Set up Celery in Django", ["project.md"]),
    "worked-examples": ("Worked examples", ["recipes/"]),
    "proof-under-failure": ("Proof under failure and load", ["proof.md"]),
}


def nav_pages(prefix: str) -> list[str]:
    """Pages under `prefix` (a folder like "task-design/" or a file) in navigation order."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            if node.startswith(prefix) and node not in found:
                found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(mkdocs_config()["nav"])
    return found


def page_text(rel: str) -> str:
    body = FRONT_MATTER.sub("", (DOCS / rel).read_text())
    return expand_generated(
        expand(proofs.expand(body, rel, mkdocs_config())), str(Path(rel).parent).strip(".")
    )


def reference(title: str, pages: list[str]) -> str:
    parts = [
        f"# {title}\n",
        "Generated from the Django Celery Expert site; every code block is a",
        "tested snippet.\n",
    ]
    for rel in pages:
        parts.append(f"\n<!-- page: docs/{rel} -->\n")
        parts.append(page_text(rel))
    return "\n".join(parts)


DESCRIPTION = (
    "Django + Celery patterns proved against real workers: classify the request, read the "
    "matching reference, implement, verify against the checklist."
)


def skill_md(categories: list[tuple[str, str, str]]) -> str:
    rows = "\n".join(f"| {t} | {scope} | `references/{slug}.md` |" for slug, t, scope in categories)
    checklist = re.findall(r"^## \d\. (.+)$", (DOCS / "checklist.md").read_text(), re.M)
    items = "\n".join(f"- {item}" for item in checklist)
    return f"""---
name: django-celery-expert
description: {DESCRIPTION}
---

# Django Celery Expert

## Step 1: Classify the request

| Category | Covers | Read |
|---|---|---|
{rows}

If the request spans several categories, read every matching reference before continuing.
New project? Read `references/setup.md` first. Classic requests (welcome email, CSV import,
order workflow) are worked end to end in `references/worked-examples.md`; what the patterns
do under killed workers and dropped connections is in `references/proof-under-failure.md`.

## Step 2: Read the reference file(s)

Do not implement before reading the relevant reference: each pattern there is shown with the
anti-pattern it replaces and the test that proves the difference.

## Step 3: Implement

Apply the patterns from the reference file(s).

## Step 4: Verify

Before presenting the solution, verify:

{items}

On an existing project, run the audit (`python manage.py celery_audit`, page "Audit your
project" in `references/production.md`): it checks these items, and the known traps of beat,
routes and deployment files, over the project's real Celery app, and exits 1 on an error.
"""


def build(out: Path) -> list[Path]:
    table = json.loads((DOCS / "assets" / "data" / "classifier.json").read_text())
    categories = [(s["slug"], s["title"], s["scope"]) for s in table["sections"]]
    refs = out / "references"
    refs.mkdir(parents=True, exist_ok=True)
    written = []
    for slug, title, _scope in categories:
        written.append(refs / f"{slug}.md")
        written[-1].write_text(reference(title, nav_pages(f"{slug}/")))
    for slug, (title, prefixes) in EXTRA.items():
        pages = [p for prefix in prefixes for p in nav_pages(prefix)]
        written.append(refs / f"{slug}.md")
        written[-1].write_text(reference(title, pages))
    (out / "SKILL.md").write_text(skill_md(categories))
    return [out / "SKILL.md", *written]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/skill")
    for path in build(target):
        print(path)
