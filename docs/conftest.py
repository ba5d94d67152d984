"""Doc tests: run each page's Python as the reader sees it.

pytest-markdown-docs reads the markdown with markdown-it, which knows nothing of
pymdownx.snippets: a fence holding `--8<-- "snippets/x.py:section"` would run that line as
code. This hook adds a core rule that expands every include with pymdownx's own
SnippetPreprocessor, configured as in mkdocs.yml, so a block runs exactly what the page shows.
Each block runs with `__name__` set to the snippet module it comes from, so models and tasks
register under the app (and names) they have in the project.
"""

from __future__ import annotations

import re

import pytest
from hooks.includes import expand_lines
from markdown_it import MarkdownIt

INCLUDE = re.compile(r"""^\s*-{1,}8<-{1,}\s+["']?(?P<path>[^"':\s]+)""")


def expand_includes(md: MarkdownIt) -> MarkdownIt:
    def rule(state) -> None:
        for token in state.tokens:
            if token.type != "fence" or "--8<--" not in token.content:
                continue
            lines = token.content.splitlines()
            module = next(
                (
                    m["path"].removesuffix(".py").replace("/", ".")
                    for line in lines
                    if (m := INCLUDE.match(line))
                ),
                None,
            )
            body = "\n".join(expand_lines(lines)) + "\n"
            token.content = f"__name__ = {module!r}\n{body}" if module else body

    md.core.ruler.push("expand_snippets", rule)
    return md


@pytest.hookimpl
def pytest_markdown_docs_markdown_it() -> MarkdownIt:
    return expand_includes(MarkdownIt("commonmark"))


@pytest.fixture(autouse=True)
def _quiet_model_reloads(recwarn):
    """Re-running a models block re-registers the model: Django warns, harmlessly, here."""
    return recwarn
