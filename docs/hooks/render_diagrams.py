"""Render the landing page's decision tree (docs/assets/decision-tree.mmd) to an inline SVG.

The landing page must stay light (mermaid itself is ~1 MB gzipped), so its tree is drawn by
the site's own copy of mermaid once, in Debian's Chromium, and committed; the SVG records the
SHA-256 of its source and tests/site/test_site.py fails when the two drift apart.
Run: ``nox -s diagrams``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SOURCE, TARGET = ASSETS / "decision-tree.mmd", ASSETS / "decision-tree.svg"
MERMAID = ASSETS / "vendor" / "mermaid" / "mermaid.min.js"
CHROMIUM = "/usr/bin/chromium"


def source_hash() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def render() -> str:
    from playwright.sync_api import sync_playwright  # only the diagrams session has it

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_content("<!doctype html><html><body></body></html>")
        page.add_script_tag(path=str(MERMAID))
        svg = page.evaluate(
            """async (text) => {
                mermaid.initialize({startOnLoad: false, theme: "neutral",
                                    securityLevel: "strict", flowchart: {htmlLabels: false}});
                const {svg} = await mermaid.render("decision-tree", text);
                return svg;
            }""",
            SOURCE.read_text(),
        )
        browser.close()
    svg = svg.replace("\n", " ")
    return f'<!-- decision-tree.mmd sha256:{source_hash()} -->\n<div class="dce-tree">{svg}</div>\n'


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)", file=sys.stderr)
