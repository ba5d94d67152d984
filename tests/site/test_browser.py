"""The site as a person uses it, in Debian's Chromium: tree, request box, search, copy,
palette, diagrams, accessibility and weight. Run with `nox -s browser`."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import markdown
import pytest
from playwright.sync_api import expect
from pymdownx.snippets import SnippetExtension

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {
    "django-integration": "Django integration",
    "task-design": "Task design",
    "configuration": "Configuration",
    "error-handling": "Error handling",
    "periodic-tasks": "Periodic tasks",
    "monitoring": "Monitoring",
    "production": "Production deployment",
}
WEIGHT_LIMIT = 400_000


@pytest.mark.parametrize(
    ("slug", "title"),
    [*SECTIONS.items(), ("troubleshooting", "Troubleshooting"), ("checklist", "checklist")],
)
def test_every_section_and_the_checklist_is_a_click_away_on_the_tree(watched, slug, title):
    page = watched.page
    page.goto("./")
    page.locator(f'.dce-tree svg a[*|href="{slug}/"]').click()
    expect(page).to_have_url(re.compile(f"/{slug}/$"))
    expect(page.locator("h1").first).to_contain_text(title, ignore_case=True)


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        (
            "Send welcome emails in the background after user registration",
            ["Django integration", "Task design"],
        ),
        ("Run a cleanup every night at 2am Berlin time", ["Periodic tasks"]),
        ("Deploy workers on Kubernetes with graceful shutdown", ["Production deployment"]),
    ],
)
def test_the_request_box_suggests_the_sections_and_leads_there(watched, request_text, expected):
    page = watched.page
    page.goto("./")
    page.locator("#dce-request").press_sequentially(request_text)
    suggestions = page.locator(".dce-suggestions a")
    expect(suggestions.first).to_be_visible()
    titles = suggestions.all_inner_texts()
    assert set(expected) <= set(titles), titles
    page.locator(".dce-suggestions a", has_text=expected[0]).click()
    expect(page.locator("h1").first).to_contain_text(expected[0])


@pytest.mark.parametrize(
    ("query", "page_title"),
    [
        ("DoesNotExist after save", "Enqueue after commit"),
        ("delay_on_commit", "Enqueue after commit"),
        ("task_failure", "Failure logging"),
    ],
)
def test_search_finds_a_pattern_by_the_words_a_user_types_and_opens_it(watched, query, page_title):
    page = watched.page
    page.goto("./checklist/")
    page.locator("input.md-search__input").click()
    page.locator("input.md-search__input").press_sequentially(query, delay=20)
    result = page.locator(".md-search-result__item", has_text=page_title).first
    expect(result).to_be_visible(timeout=15_000)
    result.locator("a").first.click()
    # The page's own h1: instant navigation keeps the search results (an h1 each) in the DOM.
    expect(page.locator(".md-content h1")).to_contain_text(page_title)


def snippet_section(path: str, section: str) -> str:
    ext = SnippetExtension(base_path=[str(ROOT)], check_paths=True, dedent_subsections=True)
    pre = markdown.Markdown(extensions=[ext]).preprocessors["snippet"]
    return "\n".join(pre.run([f'--8<-- "{path}:{section}"']))


def test_the_copy_button_copies_exactly_the_included_snippet(watched):
    page = watched.page
    page.goto("./django-integration/transactions/")
    block = page.locator(".highlight", has_text="def render_report").first
    block.hover()
    block.locator("button[data-md-type=copy]").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    expected = snippet_section("snippets/django_integration/transactions.py", "task")
    assert copied.strip() == expected.strip()


def test_the_palette_toggle_switches_between_light_and_dark(watched):
    page = watched.page
    page.goto("./")
    body = page.locator("body")
    before = body.get_attribute("data-md-color-scheme")
    page.locator("form[data-md-component=palette] label:visible").first.click()
    expect(body).not_to_have_attribute("data-md-color-scheme", before)
    page.locator("form[data-md-component=palette] label:visible").first.click()
    expect(body).to_have_attribute("data-md-color-scheme", before)


def test_mermaid_diagrams_render_from_the_site_itself(watched, site_url):
    page = watched.page
    loaded: list[str] = []
    page.on("response", lambda r: "mermaid" in r.url and loaded.append(r.url))
    page.goto("./django-integration/transactions/")
    diagram = page.locator("div.mermaid").first
    expect(diagram).to_be_visible(timeout=20_000)
    expect(page.locator("pre.mermaid")).to_have_count(0)
    assert diagram.bounding_box()["height"] > 100
    assert f"{site_url}assets/vendor/mermaid/mermaid.min.js" in loaded, loaded


def test_the_nav_tabs_and_sidebar_lead_to_a_page_without_leaving_the_sub_path(watched, site_url):
    """Material's instant navigation matches links against sitemap.xml, whose URLs carry
    site_url: a base that does not match the sub-path shows as a full reload or a wrong URL."""
    page = watched.page
    # Material intercepts a click only once its fetch of sitemap.xml has answered; on a loaded
    # machine a click before that is an ordinary (full) page load.
    page.goto("./", wait_until="networkidle")
    page.evaluate("window.dceLoaded = true")
    page.locator(".md-tabs__link", has_text="Task design").click()
    expect(page).to_have_url(f"{site_url}task-design/")
    page.locator(".md-sidebar--primary a", has_text="Idempotent tasks").click()
    expect(page).to_have_url(f"{site_url}task-design/idempotency/")
    expect(page.locator(".md-content h1")).to_contain_text("Idempotent tasks")
    assert page.evaluate("window.dceLoaded") is True, "instant navigation fell back to a reload"
    page.locator("a.md-header__button.md-logo").click()
    expect(page).to_have_url(site_url)


def test_a_missing_page_gets_the_site_404_page_styled_and_linked_under_the_sub_path(
    watched, site_url
):
    """The 404 page is the one page Material renders with absolute URLs (from site_url): built
    for the wrong base its stylesheet, scripts and links would point at the server root."""
    page = watched.page
    response = page.goto("./no-such-page/")
    assert response.status == 404
    assert watched.console_errors == [
        "Failed to load resource: the server responded with a status of 404 (Not Found)"
    ]  # the page's own status; anything else it loads must succeed
    watched.console_errors.clear()
    expect(page.locator("h1").first).to_contain_text("404")
    expect(page.locator(".md-header")).to_have_css("position", "sticky")  # the theme's CSS loaded
    page.locator("input.md-search__input").click()
    page.locator("input.md-search__input").press_sequentially("delay_on_commit", delay=20)
    result = page.locator(".md-search-result__item", has_text="Enqueue after commit").first
    expect(result).to_be_visible(timeout=15_000)
    page.keyboard.press("Escape")
    page.locator("a.md-header__button.md-logo").click()
    expect(page).to_have_url(site_url)
    expect(page.locator("#dce-request")).to_be_visible()


def test_a_request_outside_the_sub_path_is_caught_by_the_browser_and_the_server(
    watched, site_url, site_server
):
    """The guard that every browser test runs under can fail: a root-relative fetch (what a
    site built for the wrong base makes) is recorded, and the server refuses the root."""
    root = site_url.removesuffix("/django-celery-expert/")
    watched.page.goto("./")
    watched.page.evaluate("fetch('/sitemap.xml').catch(() => null)")
    assert watched.outside == [f"{root}/sitemap.xml"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{root}/index.html")
    assert refused.value.code == 404
    assert site_server.outside == ["/index.html"]
    watched.outside.clear()
    site_server.outside.clear()
    watched.console_errors.clear()  # the aborted fetch's


def test_landing_page_weight_with_all_assets(browser, site_url, site_server, record_property):
    """Everything the landing page transfers on a cold load, gzip as a static host serves it."""
    context = browser.new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    sizes: dict[str, int] = {}
    cdp.on(
        "Network.loadingFinished",
        lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]),
    )
    page.goto(site_url, wait_until="networkidle")
    page.wait_for_timeout(500)
    total = sum(sizes.values())
    record_property("landing_page_bytes", total)
    print(
        f"\nlanding page: {len(sizes)} requests, {total} bytes transferred (limit {WEIGHT_LIMIT})"
    )
    context.close()
    assert site_server.outside == []
    assert 0 < total < WEIGHT_LIMIT


AXE_PAGES = ["./", "./checklist/", "./onboarding/", *(f"./{s}/" for s in SECTIONS)]


@pytest.mark.parametrize("path", AXE_PAGES)
def test_no_serious_or_critical_accessibility_violations(watched, path, record_property):
    from axe_playwright_python.sync_playwright import Axe

    watched.page.goto(path)
    results = Axe().run(watched.page)
    bad = [
        {"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"])}
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    record_property("axe_violations", json.dumps(bad))
    print(
        f"\naxe {path}: {len(results.response['violations'])} violations, serious/critical: {bad}"
    )
    assert bad == []
