"""Report what differs between the MkDocs build and the Zensical build of the same mkdocs.yml.

`nox -s zensical` runs it; it always exits 0 (forward compatibility is reported, not enforced).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PLACEHOLDERS = ("<!-- patterns-a-z -->", "<!-- tested-versions -->", "--8&lt;--", "--8<--")


def pages(site: Path) -> set[str]:
    return {str(p.relative_to(site)) for p in site.rglob("*.html")}


def count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def compare(reference: Path, other: Path) -> list[str]:
    report = []
    ref_pages, other_pages = pages(reference), pages(other)
    report += [f"only in the MkDocs build: {p}" for p in sorted(ref_pages - other_pages)]
    report += [f"only in the Zensical build: {p}" for p in sorted(other_pages - ref_pages)]
    for extra in ("llms.txt", "sitemap.xml", "search/search_index.json"):
        if (reference / extra).exists() and not (other / extra).exists():
            report.append(f"missing from the Zensical build: {extra}")
    for page in sorted(ref_pages & other_pages):
        a, b = (reference / page).read_text(), (other / page).read_text()
        for marker in PLACEHOLDERS:
            if marker in b and marker not in a:
                report.append(f"{page}: {marker!r} left unprocessed")
        for what, pattern in (
            ("code blocks", r"<pre"),
            ("tables", r"<table"),
            ("mermaid diagrams", r'class="mermaid"'),
        ):
            if count(pattern, a) != count(pattern, b):
                report.append(f"{page}: {what} {count(pattern, a)} -> {count(pattern, b)}")
    return report


if __name__ == "__main__":
    reference, other = Path(sys.argv[1]), Path(sys.argv[2])
    differences = compare(reference, other)
    print(f"MkDocs {len(pages(reference))} pages, Zensical {len(pages(other))} pages")
    print("\n".join(differences) if differences else "no differences found")
