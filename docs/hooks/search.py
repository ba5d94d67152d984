"""Build-time hook: what the site's search box ranks (Material's lunr index).

Measured on the request list tests/site/search_requests.json by tests/site/test_search.py (the
figures: docs/assets/data/search-results.txt, on docs/proof.md; the choice: docs/versions.md):

* Material appends a wildcard to every word typed, and lunr then skips its stop-word filter: "a"
  searched for every word starting with "a", "in" for every word starting with "in", so a long
  question matched the page with the most words. The stop words, and "celery" (on every page of
  this site), become separators of the index and of the query alike (``with_stop_words``).
* Pages that list other pages (the home page, Patterns A-Z, the section indexes, the onboarding
  path, the settings reference, the error-message index) are left out of the index; pages that
  summarise every other page and the worked examples, which combine several patterns each, rank
  lower (``search: boost``).
* Each page's own entry carries its front-matter description and its Problem section, the
  problem in the words users type; Material ranks a page's own entry above its sections.
* Code blocks and the generated Proof lists are not indexed (``data-search-exclude``, which
  Material's parser skips and then strips from the page): every snippet repeats ``task`` and
  ``app``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

# reference/errors.md: the error-message index of issue #19 (every message, linked to its entry)
INDEX_LIKE = {
    "index.md",
    "patterns.md",
    "onboarding.md",
    "reference/settings.md",
    "reference/errors.md",
}
SUMMARY = {"reference/glossary.md", "proof.md", "checklist.md", "versions.md"}
SUMMARY_BOOST = 0.3
RECIPE_BOOST = 0.5
# lunr's English stop words (lunr.stopWordFilter, which the index applies to the text anyway)
LUNR_STOP_WORDS = """a able about across after all almost also am among an and any are as at be
because been but by can cannot could dear did do does either else ever every for from get got had
has have he her hers him his how however i if in into is it its just least let like likely may me
might most must my neither no nor not of off often on only or other our own rather said say says
she should since so some than that the their them then there these they this tis to too twas us
wants was we were what when where which while who whom why will with would yet you your"""
STOP_WORDS = [*LUNR_STOP_WORDS.split(), "celery"]
NOT_INDEXED = re.compile(
    r'<div class="(?:language-\w+ )?highlight"|<pre class="mermaid"|<h2 id="proof"'
)
DESCRIPTIONS: dict[str, str] = {}


def with_stop_words(separator: str) -> str:
    """The site's separator, plus every stop word as a whole word, in any case."""
    words = sorted(STOP_WORDS, key=lambda w: (-len(w), w))
    anycase = "|".join("".join(f"[{c}{c.upper()}]" for c in word) for word in words)
    return rf"{separator}|\b(?:{anycase})\b"


def index_like(src_path: str) -> bool:
    return src_path in INDEX_LIKE or src_path.endswith("/index.md")


def on_page_markdown(markdown: str, page, config, files) -> str:
    src, search = page.file.src_uri, dict(page.meta.get("search") or {})
    if index_like(src):
        search["exclude"] = True
    elif src in SUMMARY:
        search.setdefault("boost", SUMMARY_BOOST)
    elif src.startswith("recipes/"):
        search.setdefault("boost", RECIPE_BOOST)
    page.meta["search"] = search
    if page.meta.get("description"):
        DESCRIPTIONS[page.url] = page.meta["description"]
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    return NOT_INDEXED.sub(lambda m: f'{m.group(0)} data-search-exclude="hook"', html)


def on_post_build(config) -> None:
    """Stop words into the separator; each page's own entry gets its description and problem."""
    path = Path(config["site_dir"]) / "search" / "search_index.json"
    index = json.loads(path.read_text())
    index["config"]["separator"] = with_stop_words(index["config"]["separator"])
    problem = "#problem"
    problems = {
        doc["location"].removesuffix(problem): doc["text"]
        for doc in index["docs"]
        if doc["location"].endswith(problem)
    }
    for doc in index["docs"]:
        description = DESCRIPTIONS.get(doc["location"])
        if description:
            own = f"<p>{html.escape(description)}</p> {problems.get(doc['location'], '')}"
            doc["text"] = f"{own} {doc['text']}".strip()
    index["docs"] = [doc for doc in index["docs"] if not doc["location"].endswith(problem)]
    path.write_text(json.dumps(index, separators=(",", ":")))
