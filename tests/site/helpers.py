"""The request list of the search measurement (search_requests.json) and how a run is scored
and written: the site's search box and the landing page's request box are measured on the same
list by tests/site/test_search.py, Pagefind side by side by `nox -s search_compare`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from tests.results import table_rows, write_results

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REQUESTS = json.loads((Path(__file__).with_name("search_requests.json")).read_text())["requests"]
GOAL = 0.9
TOP = 5
HEADER = (
    "| Search | Requests with an existing answer | Right page in top 5 | Share "
    "| Rows waiting for a planned page | Run |\n|---|---:|---:|---:|---:|---|"
)


def existing(targets: list[str]) -> list[str]:
    """The targets that are pages of the site today (a planned troubleshooting page is not)."""
    return [t for t in targets if (DOCS / f"{t}.md").is_file()]


def page_of(href: str, site_url: str) -> str:
    """`http://host/sub/section/page/#anchor` -> `section/page` (index pages -> `section/index`)."""
    path = urlparse(href).path.removeprefix(urlparse(site_url).path).removesuffix("index.html")
    path = path.strip("/")
    if (DOCS / f"{path}.md").is_file() or not path:
        return path
    return f"{path}/index"


@dataclass
class Score:
    measured: int = 0
    hits: int = 0
    planned: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.hits / self.measured

    def summary(self) -> str:
        return f"{self.hits}/{self.measured} in the top {TOP}, {self.planned} rows wait for a page"

    def row(self, name: str) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"| {name} | {self.measured} | {self.hits} | {self.share:.0%} | {self.planned} "
            f"| {when} |"
        )


def score(found: list[list[str]]) -> Score:
    """Top-5 hits of one run: `found[i]` is the pages listed for REQUESTS[i], best first."""
    result = Score()
    for request, pages in zip(REQUESTS, found, strict=True):
        targets = existing(request["targets"])
        if not targets:
            result.planned += 1
            continue
        result.measured += 1
        if set(targets) & set(pages[:TOP]):
            result.hits += 1
        else:
            result.misses.append(f"{request['q']!r} -> {targets}, listed {pages[:TOP]}")
    return result


def record(name: str, result: Score) -> None:
    """Replace the row `name` of the results file named by SEARCH_RESULTS (nox -s browser sets
    docs/assets/data/search-results.txt, which docs/proof.md includes)."""
    target = os.environ.get("SEARCH_RESULTS")
    if not target:
        return
    path = Path(target)
    rows = [r for r in table_rows(path) if not r.startswith(f"| {name} |")]
    write_results(path, HEADER, sorted([*rows, result.row(name)]))
