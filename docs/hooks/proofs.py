"""Build-time hook: a page's Proof list comes from its tests, never typed.

* ``<!-- proof -->`` becomes one bullet per test of the page's mirror test module
  (``docs/<section>/<page>.md`` -> ``tests/<pkg>/test_<page>.py``), in file order: the test's
  name, linked to its source when ``repo_url`` is set, and the summary of its docstring (the
  first paragraph), then each ``deviation("what", reason=...)`` mark the test or its module
  carries (a departure from the recommended deployment, with its reason). When the module's
  tests start worker subprocesses, the harness-wide deviations every such worker shares
  (``HARNESS_DEVIATIONS`` in tests/harness/deployment.py, when it exists) follow the list; when
  they start beat subprocesses, those every such beat shares (``BEAT_HARNESS_DEVIATIONS``).
* ``<!-- checklist: not yet proved -->`` and ``<!-- checklist: known violations -->`` list what
  ``tests/test_checklist.py`` records as not yet proved and as known violations.

The test modules are read as syntax trees, not imported: the build needs no Django or broker.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PROOF = "<!-- proof -->"
NOT_YET_PROVED = "<!-- checklist: not yet proved -->"
KNOWN_VIOLATIONS = "<!-- checklist: known violations -->"
HARNESS = ROOT / "tests" / "harness" / "deployment.py"
WORKER_FIXTURES = frozenset({"worker_process", "shared_prefork_worker"})
WORKER_STARTERS = frozenset({"running_worker"})  # the harness's, called by a test or a fixture
BEAT_FIXTURES = frozenset({"beat_process"})
BEAT_STARTERS = frozenset({"running_beat", "start_beat"})  # the harness's, called by a test
log = logging.getLogger("mkdocs.hooks.proofs")


@dataclass
class Proof:
    name: str
    line: int
    summary: str
    deviations: list[tuple[str, str]] = field(default_factory=list)
    starts_workers: bool = False
    starts_beats: bool = False


def mirror_test_module(src_uri: str) -> Path:
    """docs/<section>/<page>.md -> tests/<pkg>/test_<page>.py (tests/test_<page>.py at the top)."""
    parts = Path(src_uri).with_suffix("").parts
    *dirs, stem = (p.replace("-", "_") for p in parts)
    return ROOT.joinpath("tests", *dirs, f"test_{stem}.py")


def summary(node: ast.AST) -> str:
    """The docstring's first paragraph, on one line."""
    doc = " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
    return doc[:1].upper() + doc[1:]  # a sentence on the page, whatever the docstring's case


def literal(node: ast.expr, bound: dict[str, ast.AST] | None = None) -> str:
    """The text of a mark's argument: a literal, or an f-string or name made of the module's
    constants (``f"SNIPPETS_REST_OF_TASK_SECONDS={LONG:g}"`` with ``LONG = 60.0``) evaluated as
    Python would; anything else as its source."""
    try:
        return str(ast.literal_eval(node))
    except ValueError:
        pass
    constants = {}
    for name in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
        value = (bound or {}).get(name)
        try:
            constants[name] = ast.literal_eval(value) if isinstance(value, ast.expr) else None
        except ValueError:
            return ast.unparse(node)
    if isinstance(node, ast.JoinedStr | ast.Name) and None not in constants.values():
        code = compile(ast.Expression(node), "<mark>", "eval")
        return str(eval(code, {"__builtins__": {}}, constants))  # constants only
    return ast.unparse(node)


def assignments(tree: ast.Module) -> dict[str, ast.AST]:
    """The module's top-level ``NAME = value`` assignments, and its functions: a decorator
    function that applies deviation marks (``@settings_deviation``) stands for the marks in
    its body."""
    bound: dict[str, ast.AST] = {
        node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)
    }
    for node in tree.body:
        if isinstance(node, ast.Assign):
            bound |= {t.id: node.value for t in node.targets if isinstance(t, ast.Name)}
    return bound


def bound_names(tree: ast.Module) -> dict[str, ast.AST]:
    """What a name used as a mark stands for: a top-level assignment of the test module, or one
    it imports from another module under tests/ (``from tests.recipes.helpers import MARK``)."""
    bound: dict[str, ast.AST] = {}
    for node in tree.body:
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
            continue
        path = ROOT.joinpath(*node.module.split(".")).with_suffix(".py")
        if node.module.split(".")[0] != "tests" or not path.is_file():
            continue
        theirs = assignments(ast.parse(path.read_text()))
        for alias in node.names:
            if alias.name in theirs:
                bound[alias.asname or alias.name] = theirs[alias.name]
    return bound | assignments(tree)


def marks(nodes: list[ast.AST], bound: dict[str, ast.AST]) -> list[ast.AST]:
    """The marks themselves: a name bound to a mark (``@RECIPE_WORKER``) is replaced by its
    value, and a list or tuple of marks (``pytestmark = [...]``) by its items."""
    found: list[ast.AST] = []
    for node in nodes:
        if isinstance(node, ast.Name) and node.id in bound:
            found += marks([bound[node.id]], {k: v for k, v in bound.items() if k != node.id})
        elif isinstance(node, ast.FunctionDef):  # its own marks, and those of names it applies
            used = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & set(bound))
            found += [node, *marks([ast.Name(id=name) for name in used], bound)]
        elif isinstance(node, ast.List | ast.Tuple):
            found += marks(node.elts, bound)
        else:
            found.append(node)
    return found


def deviations(
    decorators: list[ast.expr], bound: dict[str, ast.AST] | None = None
) -> list[tuple[str, str]]:
    """``deviation("what", reason="why")`` marks, however they are spelt (pytest.mark.deviation,
    a bare ``deviation(...)`` helper, inside a list assigned to ``pytestmark``, or a name
    bound to such a mark in the module or in a tests helper module it imports)."""
    found = []
    for node in marks(decorators, bound or {}):
        for call in ast.walk(node):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name != "deviation":
                continue
            what = literal(call.args[0], bound) if call.args else ""
            why = next((literal(k.value, bound) for k in call.keywords if k.arg == "reason"), "")
            if not why and len(call.args) > 1:
                why = literal(call.args[1])
            found.append((what, why))
    return found


def starts_beats(test: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A beat fixture among its arguments, or a call of the harness's beat starters."""
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    return bool(BEAT_FIXTURES & {a.arg for a in test.args.args} or BEAT_STARTERS & names)


def worker_fixtures(tree: ast.Module) -> frozenset[str]:
    """The harness's worker fixtures, and the module's own fixtures that start a worker: one
    that calls `running_worker` or takes a worker fixture (a module-scoped shared worker)."""
    names = set(WORKER_FIXTURES)
    fixtures = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    ]
    grew = True
    while grew:
        grew = False
        for node in fixtures:
            if node.name in names:
                continue
            called = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if WORKER_STARTERS & called or names & {a.arg for a in node.args.args}:
                names.add(node.name)
                grew = True
    return frozenset(names)


def starts_workers(test: ast.FunctionDef | ast.AsyncFunctionDef, fixtures: frozenset[str]) -> bool:
    """A worker fixture among its arguments, or a call of the harness's worker starter."""
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    return bool(fixtures & {a.arg for a in test.args.args} or WORKER_STARTERS & names)


def proofs(module: Path) -> list[Proof]:
    """Every test function (and test method of a Test class) of the module, in file order."""
    tree = ast.parse(module.read_text())
    module_marks = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
    ]
    bound = bound_names(tree)
    shared = deviations(module_marks, bound)
    fixtures = worker_fixtures(tree)
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith("test_"):
                own = shared + deviations(node.decorator_list, bound)
                workers = starts_workers(node, fixtures)
                beats = starts_beats(node)
                found.append(Proof(node.name, node.lineno, summary(node), own, workers, beats))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            class_marks = shared + deviations(node.decorator_list, bound)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test_"):
                    own = class_marks + deviations(item.decorator_list, bound)
                    name = f"{node.name}.{item.name}"
                    workers = starts_workers(item, fixtures)
                    beats = starts_beats(item)
                    found.append(Proof(name, item.lineno, summary(item), own, workers, beats))
    return found


def source_link(config, module: Path, line: int) -> str | None:
    repo = (config.get("repo_url") or "").rstrip("/")
    if not repo:
        return None
    edit_uri = config.get("edit_uri") or ""
    branch = edit_uri.strip("/").split("/")[1] if edit_uri.count("/") >= 2 else "main"
    return f"{repo}/blob/{branch}/{module.relative_to(ROOT).as_posix()}#L{line}"


def harness_deviations(path: Path = HARNESS, name: str = "HARNESS_DEVIATIONS") -> dict[str, str]:
    """The deviations every worker subprocess (`name`: every beat, with BEAT_HARNESS_DEVIATIONS)
    shares, read from the harness (none without it)."""
    if not path.is_file():
        return {}
    for node in ast.parse(path.read_text()).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name and node.value:
            return dict(ast.literal_eval(node.value))
    return {}


def proof_list(module: Path, config, harness: Path = HARNESS) -> str:
    lines = []
    found = proofs(module)
    for proof in found:
        name = f"`{proof.name}`"
        if link := source_link(config, module, proof.line):
            name = f"[{name}]({link})"
        lines.append(f"- {name}" + (f" — {proof.summary}" if proof.summary else ""))
        for what, why in proof.deviations:
            lines.append(f"    - *Deviation:* {what}" + (f" ({why})" if why else ""))
    for process, name, starts in (
        ("worker", "HARNESS_DEVIATIONS", any(p.starts_workers for p in found)),
        ("beat", "BEAT_HARNESS_DEVIATIONS", any(p.starts_beats for p in found)),
    ):
        if shared := harness_deviations(harness, name) if starts else {}:
            intro = (
                f"Every {process} subprocess these tests start also differs from the recommended "
                "deployment in (harness-wide):"
            )
            lines += ["", intro, ""]
            lines += [f"- `{what}` — {why}" for what, why in shared.items()]
    return "\n".join(lines)


def checklist_value(name: str) -> object:
    """A literal assigned at the top of tests/test_checklist.py (NOT_YET_PROVED, ...)."""
    checklist = ROOT / "tests" / "test_checklist.py"
    if not checklist.is_file():  # a build from a copy without tests/ (a warning: strict fails)
        log.warning("no %s to read %s from", checklist, name)
        return {}
    tree = ast.parse(checklist.read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call):  # frozenset({...}), or frozenset(): empty
                return ast.literal_eval(value.args[0]) if value.args else set()
            return ast.literal_eval(value)
    raise LookupError(f"tests/test_checklist.py defines no {name}")


def not_yet_proved() -> str:
    names = sorted(checklist_value("NOT_YET_PROVED"))
    items = ", ".join(f"`{n}`" for n in names)
    return f"**{len(names)} tasks**: {items}." if names else "none."


def known_violations() -> str:
    known = checklist_value("KNOWN_VIOLATIONS")
    return "\n".join(f"- `{where}` — {why}" for where, why in sorted(known.items())) or "None."


def expand(markdown: str, src_uri: str, config) -> str:
    """Every placeholder of this module, expanded for the page at ``src_uri`` (docs-relative)."""
    if PROOF in markdown:
        module = mirror_test_module(src_uri)
        if module.is_file():
            markdown = markdown.replace(PROOF, proof_list(module, config))
        else:
            log.warning("%s: <!-- proof --> but no test module %s", src_uri, module)
    if NOT_YET_PROVED in markdown:
        markdown = markdown.replace(NOT_YET_PROVED, not_yet_proved())
    if KNOWN_VIOLATIONS in markdown:
        markdown = markdown.replace(KNOWN_VIOLATIONS, known_violations())
    return markdown


def on_page_markdown(markdown: str, page, config, files) -> str:
    return expand(markdown, page.file.src_uri, config)
