"""Links go where their words say, and a page is called the same in the nav, in its heading and
in Patterns A-Z: checked on the built site, the pages as a reader gets them."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

from docs.hooks.site import front_matter

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = re.compile(r'<article class="md-content__inner[^"]*">(.*?)</article>', re.S)
HEADING = re.compile(r'<h([1-4]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
LINK = re.compile(r"<a ([^>]*)>(.*?)</a>", re.S)
# Terms are defined on the glossary and treated on their own pages: a link to the page that
# treats a term is right even though the glossary has a heading with the term's words.
NOT_A_TARGET_BY_HEADING = {"reference/glossary/"}


def words(fragment: str) -> str:
    """What a reader reads in an HTML fragment, compared loosely: no markup, no permalink,
    lower case, no leading article, no punctuation but hyphens."""
    fragment = re.sub(r'<a class="headerlink".*?</a>', "", fragment, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment)).lower().replace("\u2013", "-")
    text = re.sub(r"[^\w\s-]", " ", text)
    return re.sub(r"^(the|a|an) ", "", " ".join(text.split()))


def page_url(site: Path, index: Path) -> str:
    rel = index.parent.relative_to(site).as_posix()
    return "" if rel == "." else f"{rel}/"


@pytest.fixture(scope="module")
def pages(built_site) -> dict[str, dict]:
    """url -> the page's article HTML, its title words (h1 and nav label) and its headings."""
    found = {}
    for index in sorted(built_site.rglob("index.html")):
        text = index.read_text()
        if not (article := ARTICLE.search(text)):
            continue
        headings = [
            {words(m[3]), words(m[3].rsplit(":", 1)[-1])}
            for m in HEADING.finditer(article[1])
            if m[1] != "1"
        ]
        h1 = [words(m[3]) for m in HEADING.finditer(article[1]) if m[1] == "1"]
        [title] = re.findall(r"<title>([^<]*)</title>", text)
        nav_label = words(title.rsplit(" - ", 1)[0])
        names = {*h1[:1], nav_label} if page_url(built_site, index) else set(h1[:1])
        found[page_url(built_site, index)] = {
            "article": article[1],
            "names": names,
            "headings": headings,
        }
    return found


def named_page(text: str, pages: dict[str, dict]) -> set[str]:
    """The pages whose title or nav label the link text is, else those with a heading that is
    the link text (or whose part after a colon is); empty when the text names no page."""
    by_title = {url for url, page in pages.items() if text in page["names"]}
    if by_title:
        return by_title
    return {
        url
        for url, page in pages.items()
        if url not in NOT_A_TARGET_BY_HEADING
        for heading in page["headings"]
        if text in heading
    }


def test_every_link_whose_text_names_a_page_goes_to_that_page(pages):
    checked, wrong = 0, []
    for url, page in pages.items():
        for attrs, inner in LINK.findall(page["article"]):
            href = re.search(r'href="([^"]+)"', attrs)
            if not href or "md-tag" in attrs or "headerlink" in attrs:
                continue
            if href[1].startswith(("http:", "https:", "#", "mailto:")):
                continue
            text = words(inner)
            if not text or not (named := named_page(text, pages)):
                continue
            target = urlsplit(urljoin(f"http://site/{url}", href[1])).path.removeprefix("/")
            checked += 1
            if target not in named:
                wrong.append(f"{url}: [{text}]({href[1]}) names {sorted(named)}")
    assert checked > 20, checked  # the check sees the site's links, or it proves nothing
    assert wrong == []


def test_link_text_names_a_page_by_its_title_label_or_a_heading():
    """What the check above counts as naming a page (so that it can fail)."""
    pages = {
        "a/": {"names": {"enqueue after commit"}, "headings": [{"why"}]},
        "b/": {
            "names": {"flower"},
            "headings": [{"when down a transactional outbox", "transactional outbox"}],
        },
        "reference/glossary/": {"names": {"glossary"}, "headings": [{"soft shutdown"}]},
    }
    assert named_page(words("<code>Enqueue</code> after commit"), pages) == {"a/"}
    assert named_page(words("the transactional outbox"), pages) == {"b/"}
    assert named_page("soft shutdown", pages) == set()
    assert named_page("after commit", pages) == set()


class _IgnoreTags(yaml.SafeLoader):
    pass


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)
_IgnoreTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def nav_entries(items: list) -> list[tuple[str, str]]:
    entries = []
    for item in items:
        if isinstance(item, dict):
            for label, value in item.items():
                if isinstance(value, str):
                    entries.append((label, value))
                else:
                    entries.extend(nav_entries(value))
    return entries


NAV = nav_entries(yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_IgnoreTags)["nav"])


@pytest.mark.parametrize(("label", "path"), [e for e in NAV if e[1] != "index.md"])
def test_the_nav_label_the_heading_and_the_title_of_a_page_agree(label, path):
    """Patterns A-Z sorts by the front-matter title, the sidebar shows the nav label and the
    page the heading: one name, so a reader finds in one what they saw in the other."""
    meta, body = front_matter(ROOT / "docs" / path)
    heading = re.search(r"^# (.+)$", body, re.MULTILINE)
    assert heading, path
    assert heading[1] == label
    assert meta.get("title", label) == label
