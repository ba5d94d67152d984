"""The built site as a product, without a browser: search quality on the real index, the
generated pages (versions, patterns A-Z, llms.txt), the pre-drawn decision tree, and what its
HTML may not hold (a raw fence or include line, anything from another host)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from lunr import lunr

from docs.hooks.site import SECTION_TITLES

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "docs" / "assets"

# (what a user types, the page it must find in the first five results)
QUERIES = [
    ("DoesNotExist", "django-integration/transactions/"),
    ("delay_on_commit", "django-integration/transactions/"),
    ("rollback", "django-integration/transactions/"),
    ("task_failure", "error-handling/failure-logging/"),
    ("task_acks_late", "project/"),
    ("CELERY_TASK_ACKS_LATE", "project/"),
    ("settings have no effect namespace", "project/"),
    ("idempotent retries", "checklist/"),
]


@pytest.fixture(scope="module")
def search(built_site):
    data = json.loads((built_site / "search" / "search_index.json").read_text())
    separator = re.compile(data["config"]["separator"])
    tag = re.compile(r"<[^>]+>")

    def tokens(text: str) -> str:
        """What Material's search worker does: drop markup, split on the site's separator."""
        return " ".join(t for t in separator.split(tag.sub(" ", text)) if t)

    docs = [
        {"id": d["location"], "title": tokens(d["title"]), "text": tokens(d["text"])}
        for d in data["docs"]
    ]
    index = lunr(
        ref="id",
        fields=[{"field_name": "title", "boost": 10}, "text"],
        documents=docs,
    )

    def top(query: str, n: int = 5) -> list[str]:
        hits = index.search(tokens(query))
        pages = []
        for hit in hits:
            page = hit["ref"].split("#")[0]
            if page not in pages:
                pages.append(page)
        return pages[:n]

    return top


@pytest.mark.parametrize(("query", "page"), QUERIES)
def test_search_finds_the_page_for_a_representative_query(search, query, page):
    results = search(query)
    print(f"\nsearch {query!r}: {results}")
    assert page in results


def test_the_search_separator_splits_names_and_drops_stop_words(built_site):
    """Material appends a wildcard to every query word and lunr then skips its stop-word filter:
    the separator splits snake_case (whole, "task*" matched every task_* setting) and swallows
    stop words and "celery" (docs/hooks/search.py), on the query and on the text alike."""
    config = json.loads((built_site / "search" / "search_index.json").read_text())["config"]
    separator = re.compile(config["separator"])
    words = "A task_acks_late of app.conf.broker_url in Celery's DoesNotExist"
    assert [t for t in separator.split(words) if t] == [
        "task",
        "acks",
        "late",
        "app",
        "conf",
        "broker",
        "url",
        "'s",
        "Does",
        "Not",
        "Exist",
    ]


def test_the_decision_tree_svg_is_drawn_from_the_current_source():
    svg = (ASSETS / "decision-tree.svg").read_text()
    digest = hashlib.sha256((ASSETS / "decision-tree.mmd").read_bytes()).hexdigest()
    assert f"sha256:{digest}" in svg, "run `nox -s diagrams` after editing decision-tree.mmd"
    for slug in [*(set(SECTION_TITLES) - {"recipes"}), "checklist"]:
        assert f'xlink:href="{slug}/"' in svg


def test_generated_pages_state_installed_versions_and_list_every_pattern(built_site):
    from importlib.metadata import version

    versions = (built_site / "versions" / "index.html").read_text()
    assert f"<td>{version('celery')}</td>" in versions
    assert f"<td>{version('django')}</td>" in versions
    patterns = (built_site / "patterns" / "index.html").read_text()
    llms = (built_site / "llms.txt").read_text()
    for page in sorted((ROOT / "docs").glob("*/*.md")):
        if page.name != "index.md" and page.parent.name not in ("hooks", "reference"):
            url = f"{page.parent.name}/{page.stem}/"
            assert f'href="../{url}"' in patterns, url
            assert url in llms, url


def test_every_pattern_page_is_tagged_and_listed_by_tag(built_site):
    from docs.hooks.site import front_matter

    for page in sorted((ROOT / "docs").glob("*/*.md")):
        if page.name == "index.md" or page.parent.name in ("hooks", "assets", "reference"):
            continue
        meta, _ = front_matter(page)
        assert meta.get("tags"), f"{page.relative_to(ROOT)} has no tags"
    by_tag = (built_site / "patterns" / "index.html").read_text()
    assert by_tag.count('class="md-tag') >= 8  # one listing per section tag


def test_built_html_has_no_raw_fences_or_includes(built_site):
    leaks = [
        str(p.relative_to(built_site))
        for p in built_site.rglob("*.html")
        if "```" in p.read_text() or "--8&lt;--" in p.read_text() or "--8<--" in p.read_text()
    ]
    assert leaks == []


def test_built_site_requests_nothing_from_another_host(built_site):
    """No CDN, no web fonts: every script, stylesheet, image and font is the site's own."""
    tag = re.compile(r"<(script|link|img|iframe|source)\b[^>]*>", re.IGNORECASE)
    remote = re.compile(r"""(?:src|href)=["'](?:https?:)?//""")
    offenders = []
    for page in built_site.rglob("*.html"):
        for m in tag.finditer(page.read_text()):
            if remote.search(m[0]) and not re.search(r"rel=[\"']?(canonical|alternate)", m[0]):
                offenders.append(f"{page.relative_to(built_site)}: {m[0][:120]}")
    assert offenders == []
    assert "fonts.googleapis" not in (built_site / "index.html").read_text()
