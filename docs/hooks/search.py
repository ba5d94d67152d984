"""Build-time hook: what the site's search box ranks (Material's lunr index).

Measured on the request list tests/site/search_requests.json by tests/site/test_search.py
(figures in docs/assets/data/search-results.json, shown on docs/proof.md):

* Pages that only list other pages (the home page, Patterns A-Z, the section indexes, the
  onboarding path) are left out of the index: they contain every page's words, so they
  outranked the page that answers.
* Code blocks are left out of the index (``data-search-exclude``, which Material's parser
  skips and then strips from the page): every snippet repeats ``task``, ``celery`` and
  ``app``, so a long question matched the longest code, not the page that answers it. Prose,
  inline code, the code annotations and the Proof lists stay indexed.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

# Index-like pages (src paths): left out of search ranking.
INDEX_LIKE = {"index.md", "patterns.md", "onboarding.md", "reference/settings.md"}
# Pages that summarise every other page (a table of all settings with the pages that name
# them, the proofs of every page, the checks that link to every pattern): still found, ranked
# below the page that answers.
SUMMARY = {"reference/glossary.md", "proof.md", "checklist.md", "versions.md"}
SUMMARY_BOOST = 0.3
# The worked examples combine several patterns each, so they hold every pattern's words.
RECIPE_BOOST = 0.5
DESCRIPTIONS: dict[str, str] = {}
# Material appends a wildcard to every word typed and lunr then skips its stop-word filter, so
# "a" searched for every word starting with "a" and "of", "at", "in" nearly as many: a long
# question matched the page with the most words, not the one that answers. These words are
# made separators, on the query and on the text alike: lunr's English stop words (which the
# index drops anyway) and "celery", which every page of this site contains.
STOP_WORDS = (
    "a able about across after all almost also am among an and any are as at be because been "
    "but by can cannot could dear did do does either else ever every for from get got had has "
    "have he her hers him his how however i if in into is it its just least let like likely may "
    "me might most must my neither no nor not of off often on only or other our own rather said "
    "say says she should since so some than that the their them then there these they this tis "
    "to too twas us wants was we were what when where which while who whom why will with would "
    "yet you your"
).split() + ["celery"]
CODE_BLOCK = re.compile(r'<div class="(language-\w+ )?highlight"|<pre class="mermaid"')


def with_stop_words(separator: str) -> str:
    """The site's separator, plus every stop word as a whole word in any case."""
    words = sorted(STOP_WORDS, key=lambda w: (-len(w), w))
    anycase = "|".join("".join(f"[{c}{c.upper()}]" for c in word) for word in words)
    return rf"{separator}|\b(?:{anycase})\b"


def index_like(src_path: str) -> bool:
    return src_path in INDEX_LIKE or src_path.endswith("/index.md")


def on_page_markdown(markdown: str, page, config, files) -> str:
    search = dict(page.meta.get("search") or {})
    if index_like(page.file.src_uri):
        search["exclude"] = True
    elif page.file.src_uri in SUMMARY:
        search.setdefault("boost", SUMMARY_BOOST)
    elif page.file.src_uri.startswith("recipes/"):
        search.setdefault("boost", RECIPE_BOOST)
    page.meta["search"] = search
    if page.meta.get("description"):
        DESCRIPTIONS[page.url] = page.meta["description"]
    return markdown


def on_post_build(config) -> None:
    """The page's description (its problem in one sentence) becomes the text of the page's
    own entry, which Material ranks above the page's sections."""
    path = Path(config["site_dir"]) / "search" / "search_index.json"
    index = json.loads(path.read_text())
    index["config"]["separator"] = with_stop_words(index["config"]["separator"])
    problems = {d["location"].split("#")[0]: d["text"] for d in index["docs"] if d["location"].endswith("#problem")}
    for doc in index["docs"]:
        description = DESCRIPTIONS.get(doc["location"])
        if description:
            doc["text"] = f"<p>{html.escape(description)}</p> {problems.get(doc['location'], '')} {doc['text']}".strip()
    index["docs"] = [d for d in index["docs"] if not d["location"].endswith("#problem")]
    path.write_text(json.dumps(index, separators=(",", ":")))


EXCLUDED_SECTIONS = re.compile(r'<h2 id="(proof)"')


def on_page_content(html: str, page, config, files) -> str:
    html = CODE_BLOCK.sub(lambda m: m.group(0) + ' data-search-exclude="code"', html)
    return EXCLUDED_SECTIONS.sub(lambda m: m.group(0) + ' data-search-exclude="section"', html)
