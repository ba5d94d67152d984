"""Troubleshooting entries: every error string a heading quotes is asserted by the page's tests,
and the error-message index (docs/reference/errors.md, generated) links each one to its entry.

An entry's heading quotes the message in backticks (``## `Received unregistered task of type` …``);
the page's test module (the mirror rule: tests/troubleshooting/test_<page>.py) must hold that text
verbatim in a string it asserts with: inside an ``assert``, a ``pytest.raises(match=...)``, a
``wait_for_log(...)`` / ``wait_until(...)`` call, or in a module constant or helper function that
such a check uses. A docstring or a comment does not count: the string must be checked against
what the worker or broker printed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

from hooks import site  # noqa: E402

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

CHECKS = frozenset({"raises", "wait_for_log", "wait_until", "wait_for"})


def checking_nodes(tree: ast.Module) -> list[ast.AST]:
    """The asserts and the calls that fail unless the text is found."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            found.append(node)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CHECKS:
                found.append(node)
    return found


def literals(node: ast.AST) -> list[str]:
    """The string literals under `node` (an f-string's literal parts joined as written),
    docstrings excluded."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(node)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr):
            found.append("".join(v.value for v in n.values if isinstance(v, ast.Constant)))
            found.extend(v.value for v in n.values if isinstance(v, ast.Constant))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            found.append(n.value)
    return found


def asserted_strings(source: str) -> list[str]:
    """Every string literal the module checks output against: in a check, or in a module-level
    constant or function that a check (or such a function) uses by name."""
    tree = ast.parse(source)
    definitions: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            definitions[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    definitions[target.id] = node
    todo, seen, found = list(checking_nodes(tree)), set(), []
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.extend(literals(node))
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in definitions:
                todo.append(definitions[n.id])
    return found


def missing(strings: list[str], source: str) -> list[str]:
    checked = asserted_strings(source)
    return [s for s in strings if not any(s in literal for literal in checked)]


ENTRIES = site.error_entries(DOCS)


def test_the_troubleshooting_pages_have_entries_with_error_strings():
    assert any(strings for *_, strings in ENTRIES)


@pytest.mark.parametrize(
    ("page", "title", "strings"),
    [(rel, title, strings) for rel, _, title, _, strings in ENTRIES if strings],
    ids=lambda v: v if isinstance(v, str) and v.endswith(".md") else "",
)
def test_every_error_string_in_a_heading_is_asserted_by_the_pages_tests(page, title, strings):
    """The message a heading quotes is checked, verbatim, against real output by a test."""
    stem = Path(page).stem.replace("-", "_")
    module = ROOT / "tests" / "troubleshooting" / f"test_{stem}.py"
    assert module.is_file(), f"{page} has no test module {module.relative_to(ROOT)}"
    assert missing(strings, module.read_text()) == [], f"{page}: {title}"


def test_the_rule_rejects_a_string_only_in_a_docstring_or_an_unused_constant():
    source = '''
"""Received unregistered task of type"""
UNUSED = "OOM command not allowed"
LINE = "max number of clients reached"

def expected(name):
    return f"Connection refused. Trying again in {name}"

def test_x(log):
    """PRECONDITION_FAILED"""
    assert LINE in log
    assert expected(2) in log
'''
    strings = [
        "Received unregistered task of type",
        "OOM command not allowed",
        "max number of clients reached",
        "Connection refused. Trying again in",
        "PRECONDITION_FAILED",
    ]
    assert missing(strings, source) == [
        "Received unregistered task of type",
        "OOM command not allowed",
        "PRECONDITION_FAILED",
    ]


def test_the_index_lists_every_error_string_linked_to_its_entry():
    table = site.error_index(DOCS, "reference")
    for rel, _, _, anchor, strings in ENTRIES:
        for text in strings:
            assert f"| `{text}` |" in table
            assert f"(../{rel}#{anchor})" in table
    assert "<!-- error-index -->" in (DOCS / "reference" / "errors.md").read_text()
    assert "reference/errors.md" in (ROOT / "mkdocs.yml").read_text()
