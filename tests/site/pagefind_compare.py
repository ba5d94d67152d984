"""Pagefind side by side with the site's search (`nox -s search_compare`): the built site
indexed by Pagefind, every request of search_requests.json sent to Pagefind's own search API
(what its search box calls) in Debian's Chromium, scored like the site's search box, and the
figure written beside it in the results file (SEARCH_RESULTS).

    python -m tests.site.pagefind_compare SITE_DIR   # SITE_DIR already indexed by pagefind
"""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

from tests.site.helpers import REQUESTS, TOP, page_of, record, score

CHROMIUM = os.environ.get("SNIPPETS_CHROMIUM", "/usr/bin/chromium")
NAME = "Pagefind 1.5, side by side"


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass


def measure(site_dir: str) -> None:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=site_dir)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site_url = f"http://127.0.0.1:{server.server_port}/"
    found = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        left = []
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if urlparse(route.request.url).hostname == "127.0.0.1"
                else (left.append(route.request.url), route.abort())
            ),
        )
        page.goto(site_url)
        page.evaluate(
            "async () => { window.pf = await import('./pagefind/pagefind.js'); await pf.init(); }"
        )
        for request in REQUESTS:
            urls = page.evaluate(
                f"""async q => {{
                    const found = await pf.search(q);
                    const first = found.results.slice(0, {TOP});
                    const pages = await Promise.all(first.map(r => r.data()));
                    return pages.map(p => new URL(p.url, location.href).href);
                }}""",
                request["q"],
            )
            found.append([page_of(url, site_url) for url in urls])
        browser.close()
    server.shutdown()
    assert left == [], f"requests left 127.0.0.1: {left}"
    result = score(found)
    record(NAME, result)
    print(f"{NAME}: {result.summary()}", *result.misses, sep="\n")


if __name__ == "__main__":
    measure(sys.argv[1])
