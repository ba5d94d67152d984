# ruff: noqa: RUF001, RUF002 (the multiplication sign is what this module looks for)
"""Facts on pages come from one source, and prose leads the code.

* Measured figures come from the results files through ``<!-- bench: … -->`` /
  ``<!-- chaos: … -->`` placeholders (docs/hooks/site.py). A page fails when its prose types
  one. The rule, precisely: outside code (fences, inline code), placeholders and HTML comments,
  a page may not hold (1) a ratio, a number followed by ``×``; (2) a rate, a number followed
  by ``tasks/s``, ``rows/s`` (any word + ``/s``) or "per second"; (3) a percentage within 40
  characters of "lost", "loss" or "duplicate(s)"; (4) a duration in a sentence that says it
  was measured (measured, benchmark, took, last run). Parameters a test sets ("a 2 s limit",
  "50 items") are not measurements and stay typed.
* A shown snippet section is at most 60 lines, and a block's ``# (N)!`` markers match the
  numbered notes after it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

from hooks import site  # noqa: E402

FENCE = re.compile(r"^\s*(`{3,}|~{3,}).*?^\s*\1\s*$", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]+`")
NUMBER = r"\d+(?:[.,]\d+)?"
RATIO = re.compile(rf"{NUMBER}\s*×")
RATE = re.compile(rf"{NUMBER}\s*(?:[a-z]+/s\b|(?:\w+ )?per second)", re.IGNORECASE)
LOSS = r"\b(?:lost|loss|lose|duplicat\w*)\b"
PERCENT_LOST = re.compile(
    rf"{NUMBER}\s*%[^.;]{{0,40}}{LOSS}|{LOSS}[^.;]{{0,40}}?{NUMBER}\s*%", re.IGNORECASE
)
DURATION = re.compile(rf"{NUMBER}\s*(?:s|ms|seconds|minutes)\b")
MEASURED = re.compile(r"\b(?:measured|benchmark\w*|took|last run)\b", re.IGNORECASE)
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z*(\[])")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def prose(text: str) -> str:
    """The page's words: no code, no placeholder or comment."""
    return INLINE_CODE.sub("", COMMENT.sub("", FENCE.sub("", text)))


def typed_figures(text: str) -> list[str]:
    """Every measured figure typed in `text`, by the rule of the module docstring."""
    words = prose(text)
    found = [m[0] for pattern in (RATIO, RATE, PERCENT_LOST) for m in pattern.finditer(words)]
    for sentence in SENTENCE.split(" ".join(words.split())):
        if MEASURED.search(sentence):
            found += [f"{m[0]} ({sentence[:60]}…)" for m in DURATION.finditer(sentence)]
    return found


@pytest.mark.parametrize(
    "typed",
    [
        "Batches were 25× faster.",
        "The recipe imports 11,600 rows/s.",
        "It lost 3.5 % of the tasks.",
        "Measured here: naive 35.1 s, recipe 4.3 s.",
        "The benchmark took 12 minutes.",
    ],
)
def test_the_rule_catches_a_typed_figure(typed):
    assert typed_figures(typed) != []


def test_the_rule_lets_parameters_and_placeholders_through():
    text = (
        "A 2 s soft limit, 50 items in batches of 10, a job shown at 0 % until it starts.\n\n"
        "Batching was worth <!-- bench: Batching | ratio -->.\n\n"
        "```python\nprint(f'{ratio:.1f}×')\n```\n"
    )
    assert typed_figures(text) == []


def test_no_page_types_a_measured_figure():
    typed = {
        str(page.relative_to(ROOT)): found
        for page in pages()
        if (found := typed_figures(page.read_text()))
    }
    assert typed == {}, "include the figure from the results files: <!-- bench: NAME -->"


def test_every_figure_placeholder_names_one_row_of_a_results_file():
    used = [(p, m) for p in pages() for m in site.FIGURE.finditer(p.read_text())]
    assert used, "no page includes a measured figure"
    for page, m in used:
        rendered = site.figure(m["kind"], m["name"].strip(), m["column"], "recipes")
        assert rendered, f"{page}: {m[0]}"
        assert "<!--" not in rendered, f"{page}: {m[0]}"


def test_a_placeholder_without_a_row_fails_the_build():
    with pytest.raises(ValueError, match="matches 0 rows"):
        site.expand_figures("<!-- bench: No such benchmark -->", "")
    with pytest.raises(ValueError, match="no column"):
        site.expand_figures("<!-- bench: Batching | speed -->", "")


def test_a_bench_placeholder_renders_the_row_and_its_stamp():
    _stamp, header, row = site.results_row("bench", "Batching")
    table = site.figure("bench", "Batching", None, "task-design")
    assert " | ".join(row) in table
    assert "Last run:" in table
    assert "](../proof.md)" in table
    assert site.figure("bench", "Batching", "ratio", "") == row[header.index("Ratio")]
