"""Search as users type it, in Debian's Chromium: every request of search_requests.json (natural
questions, symptoms, pasted error messages, setting names, each from a public issue or Q&A
title) typed into the site's own search box and into the landing page's request box; the page
that answers it must be among the first five listed. Rows whose only answer is a planned
troubleshooting page are counted apart until the page exists."""

from __future__ import annotations

import pytest

from tests.site.helpers import GOAL, REQUESTS, TOP, page_of, record, score

pytestmark = pytest.mark.browser

SEARCH_BOX = "input.md-search__input"
META = ".md-search-result__meta"


def test_the_search_box_lists_the_answering_page_in_its_top_5(watched, site_url):
    """Material's search box, tuned by docs/hooks/search.py and the search plugin's settings in
    mkdocs.yml: typed request by request, the first link of each of the first five results."""
    page = watched.page
    page.goto("./")
    box = page.locator(SEARCH_BOX)
    box.click()
    found = []
    for request in REQUESTS:
        box.fill("")
        box.press("End")  # Material searches on keyup
        page.wait_for_function(f"document.querySelector('{META}').textContent.startsWith('Type')")
        box.fill(request["q"])
        box.press("End")
        page.wait_for_function(
            f"!/^(Type|Initializing)/.test(document.querySelector('{META}').textContent)"
        )
        hrefs = page.eval_on_selector_all(
            ".md-search-result__list > li.md-search-result__item",
            f"items => items.slice(0, {TOP}).map(i => i.querySelector('a').href)",
        )
        found.append([page_of(h, site_url) for h in hrefs])
    result = score(found)
    record("Search box (Material, tuned)", result)
    print(f"\nsearch box: {result.summary()}", *result.misses, sep="\n")
    assert result.share >= GOAL, result.misses


def test_the_request_box_suggests_the_answering_page_first_five(watched, site_url):
    """The landing page's request box: the pages it lists, best first, for the same requests."""
    page = watched.page
    page.goto("./")
    box = page.locator("#dce-request")
    found = []
    for request in REQUESTS:
        box.fill(request["q"])
        page.wait_for_function(
            "q => document.querySelector('.dce-classifier').dataset.answered === q",
            arg=request["q"],
        )
        hrefs = page.eval_on_selector_all(".dce-pages a", "links => links.map(a => a.href)")
        found.append([page_of(h, site_url) for h in hrefs])
    result = score(found)
    record("Landing request box", result)
    print(f"\nrequest box: {result.summary()}", *result.misses, sep="\n")
    assert result.share >= GOAL, result.misses
