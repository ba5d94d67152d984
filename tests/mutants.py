"""Mutation testing of the pattern pages (``nox -s mutants``, issue #22): does a proof fail when
the pattern breaks?

For a page ``docs/<section>/<page>.md`` the mutants are small changes to the Python snippet
sections the page includes (``--8<-- "snippets/<file>.py:<section>"``): booleans flipped, numbers
zeroed (or 0 made 1), comparisons and ``and``/``or`` swapped, ``not`` dropped, and, outside
function bodies (decorator arguments, task options, module-level settings), strings changed,
keyword arguments and dict entries dropped and upper-case settings deleted. Each mutant is
written over the file in place (so the worker subprocesses a proof starts import it too), the
page's own test module runs against it (``-x``: the first failure kills it) with a deadline, and
the file is restored. Kill-first (tests/mutants_order.py): the test that killed the last mutant
runs first for the next one, so a killed mutant usually costs one test, not half the module;
the order only moves tests (``--pytest-order`` turns it off). On PostgreSQL the test databases
are migrated once per page and every run gets new copies of them (tests/mutants_db.py). Out of
scope: anti-pattern sections (a name with ``antipattern`` or ``naive``) and functions whose
docstring starts with ``ANTI-PATTERN``, parameter defaults (the knobs tests turn), docstrings,
annotations, f-strings and ``models.py`` (a schema change needs a migration). A mutant listed in
tests/mutants_equivalent.toml (with its one-line reason) is counted as equivalent and not run.

    python -m tests.mutants task-design/idempotency error-handling/worker-loss
    python -m tests.mutants --list task-design/idempotency   # the mutants, nothing run

Writes one row per page to docs/assets/data/mutants-results.txt (tests/results.py's format,
rows of other pages kept) and every mutant's outcome to
docs/assets/data/mutants/<section>/<page>.json.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from tests import mutants_db, mutants_order
from tests.harness.process import Process
from tests.results import write_results

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = DOCS / "assets" / "data" / "mutants-results.txt"
DETAILS = DOCS / "assets" / "data" / "mutants"
EQUIVALENT = ROOT / "tests" / "mutants_equivalent.toml"
HEADER = (
    "| Page | Broker | Mutants | Killed | Survived | Equivalent | Timeout | Killed % | Wall (s) "
    "| Run |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
)
INCLUDE = re.compile(r'--8<-- "(?P<path>snippets/[^":]+\.py)(?::(?P<section>[\w-]+))?"')
MARKER = re.compile(r"#\s*--8<--\s*\[(?P<edge>start|end):(?P<name>[\w-]+)\]")
ANTI = ("antipattern", "naive")


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository
    section: str
    line: int
    start: int  # byte offsets in the file
    end: int
    replacement: str
    what: str  # "acks_late=True -> False"
    equivalent: str = ""  # why, when the tool itself knows (a deleted setting = the default)

    @property
    def key(self) -> str:
        return f"{self.path}:{self.section}: {self.what}"


# ---------------------------------------------------------------------------- which code


def page_sections(page: str) -> dict[str, set[str | None]]:
    """{snippet file: sections} the page includes (None: the whole file), anti-patterns out."""
    found: dict[str, set[str | None]] = {}
    for m in INCLUDE.finditer((DOCS / f"{page}.md").read_text()):
        path, section = m["path"], m["section"]
        name = Path(path).name
        if name == "models.py" or any(a in name for a in ANTI):
            continue
        if section and any(a in section for a in ANTI):
            continue
        found.setdefault(path, set()).add(section)
    return found


def section_lines(source: str) -> dict[str, range]:
    """{section name: its line numbers (1-based, markers excluded)}."""
    starts, ranges = {}, {}
    for number, line in enumerate(source.splitlines(), 1):
        if m := MARKER.search(line):
            if m["edge"] == "start":
                starts[m["name"]] = number
            else:
                ranges[m["name"]] = range(starts.pop(m["name"]) + 1, number)
    return ranges


def test_module(page: str) -> Path:
    """docs/<section>/<page>.md -> tests/<pkg>/test_<page>.py (the mirror rule)."""
    *dirs, stem = (p.replace("-", "_") for p in Path(page).parts)
    return ROOT.joinpath("tests", *dirs, f"test_{stem}.py")


def pattern_pages() -> list[str]:
    """Every page that includes a Python snippet section and has a mirror test module."""
    pages = []
    for md in sorted(DOCS.glob("*/*.md")):
        page = md.relative_to(DOCS).with_suffix("").as_posix()
        if md.name != "index.md" and page_sections(page) and test_module(page).is_file():
            pages.append(page)
    return pages


# ---------------------------------------------------------------------------- which changes


def is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    body = getattr(parent, "body", None)
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(body, list)
        and body[:1] == [node]
    )


class Finder(ast.NodeVisitor):
    """Collects (node, replacement source, description) for the nodes in `lines`."""

    def __init__(self, lines: set[int]) -> None:
        self.lines = lines
        self.found: list[tuple[ast.AST, str, str, str]] = []
        self.in_function = 0
        self.parent: ast.AST | None = None
        self.in_decorator = False
        self.keyword: str | None = None  # the keyword argument being visited

    def add(self, node: ast.AST, replacement: str, what: str, equivalent: str = "") -> None:
        if isinstance(node, ast.Constant) and self.keyword:
            what = f"{self.keyword}={what}"  # acks_late=True -> False
        if node.lineno in self.lines:
            self.found.append((node, replacement, what, equivalent))

    def generic_visit(self, node: ast.AST) -> None:
        parent, self.parent = self.parent, node
        super().generic_visit(node)
        self.parent = parent

    def settings_context(self) -> bool:
        return not self.in_function

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if (ast.get_docstring(node) or "").startswith("ANTI-PATTERN"):
            return
        self.in_decorator = True
        for decorator in node.decorator_list:
            self.visit(decorator)  # decorator arguments: task options, outside the body
        self.in_decorator = False
        self.in_function += 1
        for statement in node.body:
            if not is_docstring(statement, node):
                self.parent = node
                self.visit(statement)
        self.in_function -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if (ast.get_docstring(node) or "").startswith("ANTI-PATTERN"):
            return
        for statement in node.body:
            if not is_docstring(statement, node):
                self.visit(statement)

    def visit_Expr(self, node: ast.Expr) -> None:
        if not is_docstring(node, self.parent):
            self.generic_visit(node)

    def visit_arguments(self, node: ast.arguments) -> None:
        """Parameter defaults are the knobs tests turn (pause=0.0, limit=3): not mutated."""

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        """f-strings: messages, not behaviour."""

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self.add(node, repr(not value), f"{value} -> {not value}")
        elif isinstance(value, int | float):
            new = 1 if value == 0 else 0
            self.add(node, repr(new), f"{value!r} -> {new!r}")
        elif isinstance(value, str) and self.settings_context():
            self.add(node, repr(value + "-mutant"), f"{value!r} -> {value + '-mutant'!r}")

    def visit_Compare(self, node: ast.Compare) -> None:
        swaps = {
            ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt,
            ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
            ast.Is: ast.IsNot, ast.IsNot: ast.Is,
        }  # fmt: skip
        for i, op in enumerate(node.ops):
            ops = [*node.ops]
            ops[i] = swaps[type(op)]()
            new = ast.Compare(node.left, ops, node.comparators)
            self.add(node, ast.unparse(new), f"{ast.unparse(node)} -> {ast.unparse(new)}")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        new = ast.BoolOp(other, node.values)
        self.add(node, ast.unparse(new), f"{ast.unparse(node)} -> {ast.unparse(new)}")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            operand = ast.unparse(node.operand)
            self.add(node, f"({operand})", f"{ast.unparse(node)} -> {operand}")
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg == "bind":
            return  # bind=False only breaks the signature: a TypeError, not a weaker pattern
        keyword, self.keyword = self.keyword, node.arg
        self.visit(node.value)
        self.keyword = keyword

    def visit_Call(self, node: ast.Call) -> None:
        if self.settings_context() and not self.in_decorator:  # Queue(...), Exchange(...)
            for i, keyword in enumerate(node.keywords):
                if keyword.arg is None:
                    continue
                new = ast.Call(node.func, node.args, node.keywords[:i] + node.keywords[i + 1 :])
                shown = f"{keyword.arg}={ast.unparse(keyword.value)}"
                self.add(node, ast.unparse(new), f"drop {shown} from {ast.unparse(node.func)}()")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        if self.settings_context():
            for i, key in enumerate(node.keys):
                if key is None:
                    continue
                keys, values = (
                    node.keys[:i] + node.keys[i + 1 :],
                    node.values[:i] + node.values[i + 1 :],
                )
                new = ast.Dict(keys, values)
                self.add(node, ast.unparse(new), f"drop {ast.unparse(key)} from a dict")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if self.settings_context() and names and all(n.isupper() for n in names):
            why = celery_default_reason(names[0], node.value)
            self.add(node, "pass", f"delete {' = '.join(names)}", why)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit(node.value)  # an index or a key is a name, not a setting


def celery_default_reason(name: str, value: ast.expr) -> str:
    """Why deleting ``CELERY_<SETTING> = value`` changes nothing, when value is the default."""
    from celery.app.defaults import DEFAULTS

    setting = name.removeprefix("CELERY_").lower()
    if not name.startswith("CELERY_") or setting not in DEFAULTS:
        return ""
    try:
        stated = eval(  # a literal or timedelta(...), from the repository's own snippets
            compile(ast.Expression(value), "<setting>", "eval"),
            {"__builtins__": {}, "timedelta": timedelta},
        )
    except Exception:
        return ""
    default = DEFAULTS[setting]
    if isinstance(stated, list | tuple) and isinstance(default, list | tuple):
        stated, default = list(stated), list(default)
    if stated != default:
        return ""
    return f"the value is Celery's default for {setting} (celery.app.defaults): stated, not changed"


def mutants_of(path: str, sections: set[str | None]) -> list[Mutant]:
    """Every mutant of the given sections of a snippet file, in file order, no duplicates."""
    source = (ROOT / path).read_text()
    raw = source.encode()
    ranges = section_lines(source)
    tree = ast.parse(source)
    starts = [0]
    for line in raw.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    found, seen = [], set()
    for section in sorted(sections, key=str):
        lines = set(ranges[section]) if section else set(range(1, len(starts)))
        finder = Finder(lines)
        finder.visit(tree)
        for node, replacement, what, why in finder.found:
            start = starts[node.lineno - 1] + node.col_offset
            end = starts[node.end_lineno - 1] + node.end_col_offset
            mutated = raw[:start] + replacement.encode() + raw[end:]
            try:
                if ast.dump(ast.parse(mutated)) == ast.dump(tree):
                    continue  # the same program
            except SyntaxError:
                continue
            mutant = Mutant(path, section or "", node.lineno, start, end, replacement, what, why)
            key = mutant.key
            n = 2
            while key in seen:  # the same change twice in a section: number them
                key = f"{mutant.key} ({n})"
                n += 1
            seen.add(key)
            found.append(mutant if key == mutant.key else _renamed(mutant, key))
    return sorted(found, key=lambda m: (m.path, m.start, m.what))


def _renamed(mutant: Mutant, key: str) -> Mutant:
    what = key.split(": ", 1)[1]
    return Mutant(mutant.path, mutant.section, mutant.line, mutant.start, mutant.end,
                  mutant.replacement, what, mutant.equivalent)  # fmt: skip


def page_mutants(page: str) -> list[Mutant]:
    return [m for path, sections in page_sections(page).items() for m in mutants_of(path, sections)]


# ---------------------------------------------------------------------------- running


@contextlib.contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """The mutant written over the file (no stale bytecode), the original restored after."""
    path = ROOT / mutant.path
    original = path.read_bytes()
    cached = path.parent / "__pycache__"
    try:
        path.write_bytes(
            original[: mutant.start] + mutant.replacement.encode() + original[mutant.end :]
        )
        for pyc in cached.glob(f"{path.stem}.*.pyc"):
            pyc.unlink()
        yield
    finally:
        path.write_bytes(original)
        for pyc in cached.glob(f"{path.stem}.*.pyc"):
            pyc.unlink()


def run_tests(
    module: Path,
    deadline: float,
    first: list[str] | tuple[str, ...] = (),
    fresh: Callable[[], dict[str, str]] | None = None,
) -> tuple[str, float, str, str]:
    """("passed" | "failed" | "timeout", seconds, output tail, first failure) of one run of the
    test module, the tests named in `first` run first (tests/mutants_order.py). With `fresh`
    (tests/mutants_db.py), the run gets new test databases copied from the page's migrated
    templates and reuses them; without, it creates and migrates its own."""
    argv = [
        "nice", "-n", "15", sys.executable, "-m", "pytest", str(module.relative_to(ROOT)),
        "-x", "-q", "-p", "no:cacheprovider", "-p", "no:cov", "-p", "tests.mutants_order",
    ]  # fmt: skip
    began = time.monotonic()
    databases = {}
    if fresh is not None:
        databases = fresh()  # counted in the run's seconds
        argv.append("--reuse-db")
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        failed = Path(tmp) / "failed"
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", mutants_order.FIRST: "\n".join(first),
               mutants_order.FAILED: str(failed), **databases}  # fmt: skip
        run = Process.spawn(argv, log_path=Path(tmp) / "pytest.log", env=env, name="pytest")
        try:
            status = run.proc.wait(deadline)
            outcome = "passed" if status == 0 else "failed"
            if status != 0 and "+ Timeout +" in run.log():
                outcome = "timeout"  # pytest-timeout stopped a hanging test
        except subprocess.TimeoutExpired:
            outcome = "timeout"
            stop(run)
        except BaseException:  # Ctrl+C or SIGTERM: stop the tests and their workers, then restore
            stop(run)
            raise
        by = failed.read_text().strip() if failed.exists() else first_failure(run.log())
        return outcome, time.monotonic() - began, run.log()[-3000:], by


def stop(run: Process) -> None:
    """Ctrl+C (the fixtures stop their workers), then SIGKILL whatever is left: the group and
    the worker subprocesses, which run in sessions of their own."""
    try:
        tree = psutil.Process(run.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    run.stop(signal.SIGINT, timeout=60, group=True)
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()


def equivalents() -> dict[str, str]:
    """{mutant key: why it cannot change behaviour} from tests/mutants_equivalent.toml."""
    if not EQUIVALENT.exists():
        return {}
    return tomllib.loads(EQUIVALENT.read_text()).get("equivalent", {})


def killers(results: list[dict]) -> list[str]:
    """Node ids of the tests that killed mutants in `results`, the most kills first."""
    counts: dict[str, int] = {}
    for entry in results:
        if nodeid := test_of(entry.get("by", "")):
            counts[nodeid] = counts.get(nodeid, 0) + 1
    return sorted(counts, key=lambda nodeid: -counts[nodeid])


def test_of(by: str) -> str:
    """The node id in "FAILED tests/x.py::test" (none for a collection error or a log line)."""
    nodeid = by.partition(" ")[2].strip()
    return nodeid if nodeid.startswith("tests/") and "::" in nodeid else ""


def run_page(page: str, survivors: bool = False, kill_first: bool = True) -> dict:
    """Run every mutant of the page; with `survivors`, only those the page's last run did not
    kill (tests only gain assertions, so a killed mutant stays killed), the others kept.

    Kill-first (tests/mutants_order.py): the test that killed this mutant in the page's last
    run goes first, then the last test that killed a mutant in this run (move to front), then
    the killers of the page's last run, most kills first. The unmutated module passes in the
    starting order (the baseline runs in it) and, at the end, in the final one; should it fail
    there (a test that depends on the ones before it), the mutants this run killed are run again
    in pytest's own order, so a test out of its place never kills one."""
    module = test_module(page)
    mutants = page_mutants(page)
    known = equivalents()
    detail = DETAILS / f"{page}.json"
    previous = json.loads(detail.read_text()) if detail.exists() else {}
    last = previous if survivors else {}
    kept = {r["key"]: r for r in last.get("results", []) if r["outcome"] in ("killed", "timeout")}
    order = killers(previous.get("results", [])) if kill_first else []
    killed_by = {r["key"]: test_of(r.get("by", "")) for r in previous.get("results", [])}
    began = time.monotonic()
    with mutants_db.templates() as fresh:  # the test databases, migrated once per page
        print(f"== {page}: {len(mutants)} mutants, oracle {module.relative_to(ROOT)}", flush=True)
        outcome, baseline, tail, _ = run_tests(module, deadline=1800, first=order, fresh=fresh)
        if outcome != "passed":
            raise SystemExit(f"{page}: the unmutated tests do not pass ({outcome}):\n{tail}")
        deadline = 2 * baseline + 60
        print(f"   baseline {baseline:.0f} s, deadline per mutant {deadline:.0f} s", flush=True)
        passed_in = list(order)  # the order the unmutated module passed in
        results, ran = [], []
        for i, mutant in enumerate(mutants, 1):
            if mutant.key in kept:
                results.append(entry := kept[mutant.key])
                print(f"   [{i}/{len(mutants)}] {entry['outcome']:10} (last run)", flush=True)
                continue
            own = killed_by.get(mutant.key, "") if kill_first else ""  # its killer last time
            first = [own, *(n for n in order if n != own)] if own else order
            entry = run_mutant(mutant, module, deadline, first, known, fresh)
            print(f"   [{i}/{len(mutants)}] {entry['outcome']:10} {entry['seconds']:5} s  "
                  f"{mutant.key}", flush=True)  # fmt: skip
            if kill_first and (nodeid := test_of(entry.get("by", ""))):
                order[:] = [nodeid, *(n for n in order if n != nodeid)]
            results.append(entry)
            ran.append(mutant)
        if order != passed_in:
            outcome, _, tail, by = run_tests(module, deadline, first=order, fresh=fresh)
            print(f"   unmutated, in the final kill-first order: {outcome} {by}", flush=True)
            if outcome != "passed":
                print(f"   the order mattered: this run's kills again in pytest's order\n{tail}")
                again = {m.key: m for m in ran}
                for n, entry in enumerate(results):
                    if entry["outcome"] == "killed" and entry["key"] in again:
                        results[n] = run_mutant(
                            again[entry["key"]], module, deadline, [], known, fresh
                        )
                        print(f"   {results[n]['outcome']:10} {entry['key']}", flush=True)
    wall = time.monotonic() - began
    counts = {k: sum(r["outcome"] == k for r in results) for k in
              ("killed", "survived", "equivalent", "timeout")}  # fmt: skip
    broker = os.environ.get("CELERY_BROKER_URL", "memory://").split(":")[0]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run_s = [r["seconds"] for r in results if r["key"] in {m.key for m in ran}
             and r["outcome"] != "equivalent"]  # fmt: skip
    summary = {"page": page, "broker": broker, "mutants": len(mutants), **counts,
               "wall_s": round(wall), "baseline_s": round(baseline),
               "mean_s": round(sum(run_s) / len(run_s), 1) if run_s else 0,
               "order": "kill-first" if kill_first else "pytest", "results": results,
               "run": now}  # fmt: skip
    if survivors:  # the wall time and date stay the full run's; the re-run is noted
        rerun = {"run": now, "wall_s": round(wall), "mutants": len(mutants) - len(kept)}
        summary.update(wall_s=last["wall_s"], run=last["run"], rerun=rerun)
        if broker != last["broker"]:
            summary["broker"] = f"{last['broker']}; re-run on {broker}"
    return summary


def run_mutant(
    mutant: Mutant,
    module: Path,
    deadline: float,
    order: list[str],
    known: dict[str, str],
    fresh: Callable[[], dict[str, str]] | None = None,
) -> dict:
    """One mutant's entry: its outcome, seconds and the test that killed it (or why not run)."""
    entry = {**asdict(mutant), "key": mutant.key}
    if reason := known.get(mutant.key, mutant.equivalent):
        return {**entry, "outcome": "equivalent", "seconds": 0, "reason": reason}
    with applied(mutant):
        outcome, seconds, _, by = run_tests(module, deadline, first=order, fresh=fresh)
    outcome = {"passed": "survived", "failed": "killed"}.get(outcome, outcome)
    entry.update(outcome=outcome, seconds=round(seconds))
    if outcome == "killed":
        entry["by"] = by
    return entry


def first_failure(output: str) -> str:
    """The first FAILED/ERROR line of a pytest -q run that names a test module (which proof
    caught the mutant), when tests/mutants_order.py wrote none."""
    for line in output.splitlines():
        if re.match(r"(FAILED|ERROR) tests/", line):
            return line.split(" - ")[0]
    return ""


def row(summary: dict) -> str:
    live = summary["mutants"] - summary["equivalent"]
    score = f"{100 * (summary['killed'] + summary['timeout']) / live:.0f}" if live else "-"
    cells = [summary["page"], summary["broker"], *(str(summary[k]) for k in
             ("mutants", "killed", "survived", "equivalent", "timeout")), score,
             str(summary["wall_s"]), summary["run"]]  # fmt: skip
    if rerun := summary.get("rerun"):
        cells[-1] += f"; survivors re-run {rerun['run']} ({rerun['wall_s']} s)"
    return "| " + " | ".join(cells) + " |"


def record(summary: dict) -> None:
    """The page's mutants in its JSON file, then the table rebuilt from every page's file."""
    detail = DETAILS / f"{summary['page']}.json"
    detail.parent.mkdir(parents=True, exist_ok=True)
    detail.write_text(json.dumps(summary, indent=1) + "\n")
    write_table()


def write_table() -> None:
    """mutants-results.txt: one row per page with a JSON file, each from that page's last run."""
    summaries = [json.loads(p.read_text()) for p in sorted(DETAILS.glob("*/*.json"))]
    note = (
        "Killed % counts timeouts (a hang) as killed, of the mutants not equivalent; each "
        "page's row is from its own last run (Run), with the page's tests as they were then. "
        f"The last row adds the pages up: a full run ({FULL_RUN}) runs them one after another, "
        "so its wall time is the sum of theirs, each measured on the 2-core machine while other "
        "runs shared it (an upper bound)."
    )
    write_results(RESULTS, HEADER, [*(row(s) for s in summaries), total_row(summaries)], note)


FULL_RUN = "`nox -s mutants`, no page named"
TOTAL = "all pattern pages"


def total_row(summaries: list[dict]) -> str:
    """The pages added up: what a full run counts, and its wall time (the runs in sequence)."""
    keys = ("mutants", "killed", "survived", "equivalent", "timeout", "wall_s")
    total = {k: sum(s[k] for s in summaries) for k in keys}
    hours = f"{total['wall_s'] / 3600:.1f} h"
    total.update(page=f"{TOTAL} ({len(summaries)})", broker="-", run=f"sum of the rows: {hours}")
    return row(total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="docs pages, e.g. task-design/idempotency")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument(
        "--survivors", action="store_true", help="re-run only what the last run did not kill"
    )
    parser.add_argument(
        "--pytest-order", action="store_true", help="no kill-first: the tests in pytest's order"
    )
    args = parser.parse_args(argv)
    # Interrupted (Ctrl+C, or SIGTERM even when started in the background, where SIGINT is
    # ignored): unwind, so the running tests are stopped and the snippet file is restored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pages = args.pages or pattern_pages()
    for page in pages:
        if args.list:
            known = equivalents()
            for mutant in page_mutants(page):
                mark = "  (equivalent)" if mutant.key in known or mutant.equivalent else ""
                print(f"{page}  line {mutant.line}  {mutant.key}{mark}")
            continue
        summary = run_page(page, survivors=args.survivors, kill_first=not args.pytest_order)
        record(summary)
        print(row(summary), flush=True)
        for entry in summary["results"]:
            if entry["outcome"] == "survived":
                print(f"   SURVIVED line {entry['line']}: {entry['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
