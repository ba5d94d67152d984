# ruff: noqa: RUF001, RUF002 (the multiplication sign is what this module looks for)
"""Facts on pages come from one source, and prose leads the code.

* Measured figures come from the results files through ``<!-- bench: … -->`` /
  ``<!-- chaos: … -->`` placeholders (docs/hooks/site.py). A page fails when its prose types
  one. The rule, precisely: outside code (fences, inline code), placeholders and HTML comments,
  a page may not hold (1) a ratio, a number followed by ``×``; (2) a rate, a number followed
  by ``tasks/s``, ``rows/s`` (any word + ``/s``) or "per second"; (3) a percentage within 40
  characters of "lost", "loss" or "duplicate(s)", or a count of one or more lost or duplicated
  ("358 lost", "11 duplicates", "lost 4"); (4) a duration in a sentence that says it
  was measured (measured, benchmark, took, last run). Parameters a test sets ("a 2 s limit",
  "50 items") are not measurements and stay typed.
* A default a page states ("`X` defaults to V", "`X` (default V)", "V by default") agrees with
  the installed Celery (or kombu, for transport options); a "Celery default" table column is
  filled by ``<!-- default: NAME -->``. The settings reference lists every setting the site
  names, and each "read by" claim points at Celery source that reads it.
* Wordings the glossary refutes (an early ack "on receipt", eager mode "serializes nothing")
  do not come back.
* A shown snippet section is at most 60 lines, and a block's ``# (N)!`` markers match the
  numbered notes after it.
"""

from __future__ import annotations

import ast
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
LOSS_COUNT = re.compile(
    r"\b[1-9][\d,]*\s+(?:\w+\s+)?(?:lost|duplicates?|duplicated)\b"
    r"|\b(?:lost|duplicated)\s+[1-9][\d,]*\b",
    re.IGNORECASE,
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
    patterns = (RATIO, RATE, PERCENT_LOST, LOSS_COUNT)
    found = [m[0] for pattern in patterns for m in pattern.finditer(words)]
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
        "The anti-pattern lost 358 of 1000; the other run had 11 duplicates.",
        "Measured here: naive 35.1 s, recipe 4.3 s.",
        "The benchmark took 12 minutes.",
    ],
)
def test_the_rule_catches_a_typed_figure(typed):
    assert typed_figures(typed) != []


def test_the_rule_lets_parameters_and_placeholders_through():
    text = (
        "A 2 s soft limit, 50 items in batches of 10, a job shown at 0 % until it starts.\n\n"
        "Every pattern row shows 0 duplicates and 0 lost.\n\n"
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


def test_a_chaos_placeholder_renders_one_scenario_row():
    name = "SIGKILL pool children / early ack (anti-pattern) / redis"
    _stamp, header, row = site.results_row("chaos", name)
    assert site.figure("chaos", name, "lost", "") == row[header.index("Lost")]
    assert site.expand_figures(f"<!-- chaos: {name} | lost -->", "") == row[header.index("Lost")]


def test_a_bench_placeholder_renders_the_row_and_its_stamp():
    _stamp, header, row = site.results_row("bench", "Batching")
    table = site.figure("bench", "Batching", None, "task-design")
    assert " | ".join(row) in table
    assert "Last run:" in table
    assert "](../proof.md)" in table
    assert site.figure("bench", "Batching", "ratio", "") == row[header.index("Ratio")]


# --- Celery defaults stated on pages -------------------------------------------------------

NAME = r"`(?:app\.conf\.)?(?P<name>[a-z_]+)(?:\s*=[^`]*)?`|(?<!\w)`?CELERY_(?P<upper>[A-Z_]+)`?"
VALUE = (
    r"`[^`]+`|\*\*\w+\*\*|(?:one|a|an) (?:day|hour|minute)"
    r"|\d+(?:\.\d+)?(?:\s*(?:s|ms|seconds|minutes|hours|days?)\b)?|on\b|off\b|enabled|disabled"
    r"|true\b|false\b|none\b"
)
GAP = r"(?:[^.;`\n]|`[^`]*`|\.(?=\d)){0,60}?"
STATED = re.compile(
    rf"(?:{NAME}){GAP}(?:"
    rf"defaults? to:? (?P<v1>{VALUE})"
    rf"|\bdefault(?: is)?:? (?P<v2>{VALUE})"
    rf"|(?P<v3>{VALUE}) by default)",
    re.IGNORECASE,
)
UNITS = {"ms": 0.001, "s": 1, "second": 1, "minute": 60, "hour": 3600, "day": 86400}


def normalize(value: object) -> object:
    """A default as a comparable value: seconds for durations, lists for sequences."""
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def parse_value(text: str) -> object:
    """What a page's words say a default is; LookupError when they say nothing comparable."""
    text = text.strip("`*").strip()
    words = text.lower()
    if words in {"on", "enabled", "true"}:
        return True
    if words in {"off", "disabled", "false"}:
        return False
    if words == "none":
        return None
    if m := re.fullmatch(r"(?:one|a|an) (day|hour|minute)", words):
        return float(UNITS[m[1]])
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|seconds?|minutes?|hours?|days?)?", words):
        unit = (m[2] or "s").removesuffix("s") or "s"
        return float(m[1]) * UNITS.get(unit, 1) if m[2] else float(m[1])
    try:
        return normalize(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def stated_defaults(text: str) -> list[tuple[str, str, object]]:
    """(setting, the words, the value they state) for every "X defaults to V"-like phrase."""
    words = COMMENT.sub("", FENCE.sub("", text))
    found = []
    for m in STATED.finditer(words):
        name = (m["name"] or m["upper"] or "").lower()
        name = name.removeprefix("celery_") if m["name"] and m["name"].isupper() else name
        said = m["v1"] or m["v2"] or m["v3"]
        found.append((name, m[0], parse_value(said)))
    return found


def contradictions(text: str) -> list[str]:
    """Stated defaults of known settings that the installed Celery (or kombu) contradicts."""
    known = {**site.celery_settings(), **site.transport_defaults()}
    effective = site.effective_defaults()
    wrong = []
    for name, said, value in stated_defaults(text):
        if name not in known:
            continue
        actual = normalize(site.default_value(name))
        allowed = [actual]
        if name in effective:
            allowed.append(normalize(effective[name][0]))
        if actual is None and value is False:  # "None (off)" and "off" say the same
            continue
        if value not in allowed:
            wrong.append(f"{said!r}: installed default {allowed}")
    return wrong


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("`worker_prefetch_multiplier` defaults to 4.", False),
        ("`worker_prefetch_multiplier` defaults to 1.", True),
        ("`CELERY_TASK_ACKS_LATE` (default `True`) acks late.", True),
        ("`task_acks_on_failure_or_timeout`, default on, acks.", False),
        (
            "`result_expires` (two days by default) and `result_expires` (one day by default).",
            False,
        ),
        ("`result_expires` (2 days by default).", True),
        ("`worker_soft_shutdown_timeout` (Celery 5.5+, default 0: off) applies.", False),
        ("`worker_soft_shutdown_timeout` (Celery 5.5+, default 30 s) applies.", True),
        ("`visibility_timeout` (default 3600 s) + the sweep.", False),
        ("`visibility_timeout` (default 600 s) + the sweep.", True),
        ("`beat_max_loop_interval` between checks (300 s by default).", False),
    ],
)
def test_the_default_check_reads_the_phrases(text, wrong):
    assert bool(contradictions(text)) is wrong, stated_defaults(text)


def test_no_page_states_a_default_the_installed_celery_contradicts():
    wrong = {
        str(page.relative_to(ROOT)): found
        for page in pages()
        if (found := contradictions(page.read_text()))
    }
    assert wrong == {}, "use <!-- default: NAME --> or fix the page"


def test_a_celery_default_column_holds_only_generated_defaults():
    """A table column headed "Celery default" is filled by <!-- default: NAME --> only."""
    typed = []
    for page in pages():
        header: list[str] | None = None
        for line in page.read_text().splitlines():
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if "celery default" in header and not set(line) <= set("|-: "):
                cell = site.DEFAULT.sub("", cells[header.index("celery default")])
                if re.search(r"`|\d", cell):
                    typed.append(f"{page.relative_to(ROOT)}: {cell}")
    assert typed == []


def test_every_default_placeholder_names_a_known_setting():
    names = {m["name"] for page in pages() for m in site.DEFAULT.finditer(page.read_text())}
    assert names, "no page reads a default from the installed Celery"
    for name in names:
        site.default_value(name)  # KeyError for a name Celery and kombu do not know


# --- The settings reference ----------------------------------------------------------------


def test_the_reference_lists_every_setting_the_site_names_with_its_installed_default():
    from celery.app.defaults import DEFAULTS

    table = site.settings_reference("reference")
    names = site.site_settings()
    assert {"task_acks_late", "worker_prefetch_multiplier", "broker_transport_options"} <= set(
        names
    )
    for name in names:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`CELERY_{name.upper()}`" in row
        assert site.show_default(DEFAULTS[name]) in row


def test_each_reader_claim_points_at_celery_source_that_reads_the_setting():
    """The module named for each setting is in the installed Celery and names the setting."""
    import celery

    source = Path(celery.__file__).parent.parent
    unread = [
        f"{name}: {module}"
        for name in site.site_settings()
        for _reader, module in [site.readers(name)]
        if name not in (source / module).read_text()
    ]
    assert unread == []


def test_the_settings_and_glossary_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert "reference/settings.md" in nav
    assert "reference/glossary.md" in nav
    assert "<!-- settings-reference -->" in (DOCS / "reference" / "settings.md").read_text()


# --- One wording per term (docs/reference/glossary.md) -------------------------------------

# Wordings that contradict the glossary, each with the source line that refutes it.
WRONG_WORDINGS = {
    r"ack\w*(?: \w+){0,3} on receipt|acknowledged as soon as (?:a|the) worker\s+receives": (
        "early ack happens when a pool process accepts the task, just before it runs "
        "(celery/worker/request.py, Request.on_accepted)"
    ),
    r"eager mode[^.]*nothing is serialized|(?:on|in) Celery 5\.7,? eager|eager[^.]*on 5\.7": (
        "eager apply_async() round-trips its arguments since Celery 4.3 (commit 8dcc621, #4456)"
    ),
    r"gevent\W+eventlet[^|\n]*\|[^|\n]*\|[^|\n]*\| a green timeout": (
        "eventlet enforces no time limit (celery/concurrency/eventlet.py, TaskPool.on_apply)"
    ),
    r"soft.shutdown[^.]*for up to": (
        "the soft shutdown sleeps the whole window (WorkController.wait_for_soft_shutdown)"
    ),
}


@pytest.mark.parametrize("pattern", WRONG_WORDINGS)
def test_no_page_or_snippet_uses_a_wording_the_glossary_refutes(pattern):
    glossary = DOCS / "reference" / "glossary.md"  # states the wrong wordings to refute them
    texts = [*(p for p in pages() if p != glossary), *sorted((ROOT / "snippets").rglob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}: {m[0]}"
        for path in texts
        for m in re.finditer(pattern, " ".join(path.read_text().split()), re.IGNORECASE)
    ]
    assert found == [], WRONG_WORDINGS[pattern]


def test_the_wording_check_catches_the_old_wordings():
    old = [
        "Celery keeps its default and acks every task on receipt.",
        "tasks are acknowledged as soon as a worker receives them",
        "Eager mode hides this, because nothing is serialized.",
        "(On Celery 5.7 eager mode does serialize arguments)",
        "| `gevent` / `eventlet` | green threads | patched | a green timeout, effective only |",
        "cold shutdown with a soft-shutdown window: lets tasks finish for up to 50 s",
    ]
    for text in old:
        assert any(re.search(p, text, re.IGNORECASE) for p in WRONG_WORDINGS), text


# --- Prose leads: short shown sections, annotations that match their notes ----------------

FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<tick>`{3,}|~{3,})")
INCLUDE_LINE = re.compile(
    r"""^\s*-{1,}8<-{1,}\s+["'](?P<path>[^"':]+)(?::(?P<section>[\w-]+))?["']"""
)
ANNOTATION = re.compile(r"(?:#|//|<!--)\s*\((\d+)\)!")
NOTE = re.compile(r"^(\d+)\. ")
MAX_SHOWN_LINES = 60


def included_blocks(page: Path):
    """(line number, included paths, the included text, the page's lines after the fence)."""
    from hooks.includes import expand_lines

    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        if m := FENCE_OPEN.match(lines[i]):
            body, start = [], i
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(m["tick"]):
                body.append(lines[i])
                i += 1
            named = [inc for b in body if (inc := INCLUDE_LINE.match(b))]
            if named:
                text = "\n".join(expand_lines([b.strip() for b in body]))
                yield start + 1, [n[0].strip() for n in named], text, lines[i + 1 :]
        i += 1


def notes_after(rest: list[str]) -> list[int]:
    """The numbers of the numbered list right after a block (blank lines may come first)."""
    numbers = []
    for line in rest:
        if not line.strip():
            continue
        if m := NOTE.match(line):
            numbers.append(int(m[1]))
        elif not line.startswith("   "):  # neither a note nor a note's continuation
            break
    return numbers


def section_length(path: str, section: str | None) -> int:
    text = (ROOT / path).read_text().splitlines()
    if section is None:
        return len(text)
    start = text.index(next(line for line in text if f"[start:{section}]" in line))
    end = text.index(next(line for line in text if f"[end:{section}]" in line))
    return len([line for line in text[start + 1 : end] if "--8<--" not in line])


def test_no_shown_section_is_longer_than_60_lines():
    """Prose leads: a long block is split, with a few sentences before each part."""
    long = {
        f"{m['path']}:{m['section']} ({n} lines)"
        for page in pages()
        for _line, includes, _text, _rest in included_blocks(page)
        for m in map(INCLUDE_LINE.match, includes)
        if (n := section_length(m["path"], m["section"])) > MAX_SHOWN_LINES
    }
    assert long == set()


def test_every_annotated_block_has_exactly_its_numbered_notes():
    """`# (N)!` markers 1..N in a block, and notes 1..N right after it, in order."""
    wrong = []
    for page in pages():
        for line, _includes, text, rest in included_blocks(page):
            markers = [int(n) for n in ANNOTATION.findall(text)]
            if not markers:
                continue
            notes = notes_after(rest)
            expected = list(range(1, len(markers) + 1))
            if markers != expected or notes != expected:
                wrong.append(f"{page.relative_to(ROOT)}:{line}: markers {markers}, notes {notes}")
    assert wrong == []


def test_the_annotation_check_counts_markers_and_notes():
    assert notes_after(["", "1. one", "   more", "2. two", "", "Prose."]) == [1, 2]
    assert ANNOTATION.findall("x = 1  # (1)!\ny = 2  # (2)!") == ["1", "2"]


def test_the_skill_bundle_gets_the_figures_not_the_placeholders():
    from hooks import skill

    text = skill.page_text("configuration/production-settings.md") + skill.page_text(
        "recipes/index.md"
    )
    assert "<!-- default:" not in text
    assert "<!-- bench:" not in text
    assert site.figure("bench", "CSV import", "ratio", "") in text


GLOSSARY_TERMS = re.compile(
    r"(?<![\w`-])(?:early[ -]ack|late[ -]ack|visibility timeout|(?:soft|cold|warm)[ -]shutdown"
    r"|redeliver\w*|prefetch\w*|eager mode)(?![\w`])",
    re.IGNORECASE,
)


def test_a_page_that_uses_a_glossary_term_links_the_glossary():
    """The words keep one meaning: a page that uses them points at where it is fixed."""
    unlinked = [
        str(page.relative_to(ROOT))
        for page in pages()
        if page.name != "index.md"
        and page.parent.name != "reference"
        and GLOSSARY_TERMS.search(prose(page.read_text()))
        and "reference/glossary.md#" not in page.read_text()
    ]
    assert unlinked == []
