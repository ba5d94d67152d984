"""The built site, served on 127.0.0.1 the way a static host serves it (gzip), and a
Chromium from Debian driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import functools
import gzip
import http.server
import importlib.util
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlsplit

import pytest

# The browser tests run in `nox -s browser`; the tests session has no Playwright to import.
collect_ignore = [] if importlib.util.find_spec("playwright") else ["test_browser.py"]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SNIPPETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# The site as GitHub Pages serves a project site: built for its hosted URL, which has a
# sub-path, and served under that sub-path only, so any link or asset that escapes to the
# server root (a `/assets/...` URL, a root-relative fetch) is caught. The hosted URL is this
# server's own address, port included, as on Pages: Material's instant navigation matches
# links against sitemap.xml, whose URLs carry site_url. (tests/site/test_hosting.py checks a
# build for an https://docs.example.org/django-celery-expert/ URL.)
PREFIX = "/django-celery-expert/"


@pytest.fixture(scope="session")
def site_server(tmp_path_factory) -> Iterator[http.server.ThreadingHTTPServer]:
    """The server, listening before the site is built: the build needs its address."""
    directory = tmp_path_factory.mktemp("site")
    handler = functools.partial(SubPathHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.directory, server.outside = directory, []
    server.url = f"http://127.0.0.1:{server.server_port}{PREFIX}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def built_site(site_server) -> Path:
    out = site_server.directory
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "SITE_URL": site_server.url},
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def site_url(built_site, site_server) -> str:
    """The built site's address: http://127.0.0.1:<port>/django-celery-expert/."""
    return site_server.url


class SubPathHandler(http.server.SimpleHTTPRequestHandler):
    """The built site under PREFIX only, as GitHub Pages serves a project site: gzip when the
    client accepts it, the site's own 404.html (status 404) for a missing page, and nothing at
    the server root (such a request is recorded in `server.outside` and refused)."""

    COMPRESS = (".html", ".css", ".js", ".json", ".svg", ".xml", ".txt", ".mjs")

    def log_message(self, *_args: object) -> None:
        pass

    def translate_path(self, path: str) -> str:
        path = urlsplit(path).path
        inside = "/" + path[len(PREFIX) :] if path.startswith(PREFIX) else "/"
        return super().translate_path(inside)

    def send_head(self):
        url = urlsplit(self.path).path
        if url == PREFIX.rstrip("/"):
            return super().send_head()  # the directory without its slash: a redirect
        if not url.startswith(PREFIX):
            self.server.outside.append(self.path)
            self.send_error(404, "outside the site's sub-path")
            return None
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            if not url.endswith("/"):
                return super().send_head()  # redirect to the slash
            path = path / "index.html"
        status = 200
        if not path.is_file():
            status, path = 404, Path(self.directory) / "404.html"
        body = path.read_bytes()
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "") and path.suffix in self.COMPRESS
        if gzipped:
            body = gzip.compress(body)
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(str(path)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's Chromium is needed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watched:
    """A page whose console errors, off-host requests and requests outside the site's sub-path
    are recorded (and refused)."""

    def __init__(self, context, page, site_url: str) -> None:
        self.context, self.page = context, page
        self.console_errors: list[str] = []
        self.external: list[str] = []
        self.outside: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))

        def guard(route) -> None:
            url = route.request.url
            if url.startswith(("data:", "blob:")):
                route.continue_()
            elif urlparse(url).hostname != "127.0.0.1":
                self.external.append(url)
                route.abort()
            elif not url.startswith(site_url):
                self.outside.append(url)
                route.abort()
            else:
                self.requests.append(url)
                route.continue_()

        context.route("**/*", guard)


@pytest.fixture
def watched(browser, site_url, site_server) -> Iterator[Watched]:
    context = browser.new_context(base_url=site_url)
    origin = site_url.removesuffix(PREFIX)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    w = Watched(context, context.new_page(), site_url)
    yield w
    context.close()
    assert w.external == [], "requests left 127.0.0.1"
    assert w.outside == [], f"requests outside {PREFIX}"
    assert w.requests, "no request was recorded: the guard saw nothing"
    outside, site_server.outside[:] = list(site_server.outside), []
    assert outside == [], f"the server was asked for files outside {PREFIX}"
    assert w.console_errors == [], "console errors"
