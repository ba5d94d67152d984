"""The verify checklist (docs/checklist.md), enforced over every task and every snippet.

The rules are built from the tests' own marks, read straight off the test functions (so they
hold when only this file is collected): ``@pytest.mark.proves_idempotent(task=...)`` names the
task a test proves safe to run twice, ``@pytest.mark.antipattern(task=...)`` or
``@pytest.mark.antipattern("snippets/<path>[:section]")`` the deliberate anti-pattern a test
shows failing. (A task is passed by keyword: pytest takes a lone callable argument for the
function to decorate.) The code a page shows carries no trace of either.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import textwrap
import types
import typing
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JSON_SCALARS = {int, float, str, bool, type(None)}

# Fixtures that start a real worker *subprocess*: the only kind a proof can kill.
SUBPROCESS_WORKERS = frozenset({"worker_process", "shared_prefork_worker"})
# Calls that kill a process (a pool child, a worker, the task's database connection).
KILLS = frozenset({"kill", "killpg", "send_signal", "terminate", "sigkill", "kill_pool_child"})
KILL_SQL = "pg_terminate_backend("  # the chaos harness kills the task's database session

# Tasks that can run twice under the recommended settings (global acks_late) and have no
# test yet that kills or redelivers them on a worker subprocess. Rule 2 requires this set
# to be exact: a new task lands with its proof. Empty since every pattern task got its proof
# (issue #16: 53 tasks; those a redelivery showed unsafe were fixed on the way); keep it empty.
NOT_YET_PROVED: frozenset[str] = frozenset()

# Pattern code that breaks a rule today, each with the finding that will fix it. The rules
# require this to be exact too, so a fix removes its line.
KNOWN_VIOLATIONS: dict[str, str] = {}


# ---------------------------------------------------------------- the tests and their marks


@dataclass
class MarkedTest:
    node_id: str
    function: Callable
    marks: list = field(default_factory=list)

    def args_of(self, name: str) -> list[object]:
        """The targets of this test's ``name`` marks: ``task=`` or the first argument."""
        marks = [m for m in self.marks if m.name == name]
        return [m.kwargs["task"] if "task" in m.kwargs else m.args[0] for m in marks]


def as_marks(value: object) -> list:
    return list(value) if isinstance(value, list | tuple) else [value] if value else []


def with_param_marks(marks: list) -> list:
    """Marks given to ``pytest.param(..., marks=...)`` count for the test too."""
    extra = []
    for mark in marks:
        if mark.name == "parametrize" and len(mark.args) > 1:
            for value in mark.args[1]:
                extra += as_marks(getattr(value, "marks", ()))
    return marks + extra


def load_test_modules() -> list[types.ModuleType]:
    """Every test module that can prove a task: tests/site drives the built site in a browser
    (its modules import Playwright, which only `nox -s browser` installs) and runs no task."""
    paths = sorted(p for p in (ROOT / "tests").rglob("test_*.py") if "site" not in p.parts[-2:-1])
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in paths]
    return [importlib.import_module(name) for name in names]


@cache
def marked_tests() -> tuple[MarkedTest, ...]:
    """Every test function under tests/, with its module, class and own marks."""
    found = []
    for module in load_test_modules():
        path = Path(module.__file__).relative_to(ROOT).as_posix()
        module_marks = as_marks(getattr(module, "pytestmark", []))
        for name, obj in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(obj):
                if obj.__module__ == module.__name__:
                    own = as_marks(getattr(obj, "pytestmark", []))
                    found.append(MarkedTest(f"{path}::{name}", obj, module_marks + own))
            elif name.startswith("Test") and inspect.isclass(obj):
                class_marks = as_marks(getattr(obj, "pytestmark", []))
                for method_name, method in vars(obj).items():
                    if method_name.startswith("test_") and inspect.isfunction(method):
                        own = as_marks(getattr(method, "pytestmark", []))
                        node = f"{path}::{name}::{method_name}"
                        found.append(MarkedTest(node, method, module_marks + class_marks + own))
    for test in found:
        test.marks = with_param_marks(test.marks)
    return tuple(found)


def is_task(obj: object) -> bool:
    from snippets.project.celery import app

    return callable(getattr(obj, "run", None)) and getattr(obj, "name", None) in app.tasks


def resolve_snippet(target: str) -> str | None:
    """Why ``snippets/<path>[:section]`` does not resolve, or None when it does."""
    path, _, section = target.partition(":")
    file = ROOT / path
    if not (path.startswith("snippets/") and file.is_file()):
        return f"{path} is not a file under snippets/"
    if section and f"--8<-- [start:{section}]" not in file.read_text():
        return f"{path} has no section {section!r}"
    return None


def proofs_by_task() -> dict[str, list[MarkedTest]]:
    proofs = defaultdict(list)
    for test in marked_tests():
        for task in test.args_of("proves_idempotent"):
            proofs[task.name].append(test)
    return proofs


def antipattern_targets() -> dict[object, list[str]]:
    """Each anti-pattern target (a task's name, or a snippets path) -> the tests marking it."""
    targets = defaultdict(list)
    for test in marked_tests():
        for target in test.args_of("antipattern"):
            key = target.name if is_task(target) else target
            targets[key].append(test.node_id)
    return targets


# ---------------------------------------------------------------- the tasks


def snippet_tasks() -> list:
    from snippets.project.celery import app

    marked_tests()  # the test modules import the tasks that live outside an installed app
    return sorted(
        (t for name, t in app.tasks.items() if name.startswith("snippets.")), key=lambda t: t.name
    )


def task_label(task) -> str:
    return task.name.removeprefix("snippets.")


def pattern_tasks() -> list:
    exempt = antipattern_targets()
    return [t for t in snippet_tasks() if t.name not in exempt]


def called_functions(fn: Callable, inside: str) -> Iterator[Callable]:
    """fn, and the functions of modules named ``inside.*`` it calls by name, transitively."""
    seen: set[Callable] = set()
    todo = [inspect.unwrap(fn)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(current)))
        except (OSError, TypeError):
            continue
        names = getattr(current, "__globals__", {})
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                callee = names.get(node.func.id)
                if inspect.isfunction(callee) and callee.__module__.startswith(inside):
                    todo.append(callee)


def calls_retry(task) -> bool:
    """Does the task's code, or any snippets function it calls, call ``.retry(``?"""
    run = getattr(task, "_orig_run", task.run)
    for fn in called_functions(run, "snippets."):
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if call and node.func.attr == "retry":
                return True
    return False


def can_run_twice(task) -> list[str]:
    """Why this task may run twice under the recommended settings (empty: it cannot)."""
    reasons = []
    if task.acks_late:  # the task's option, or the app's task_acks_late when it sets none
        reasons.append("acks_late")
    if task.acks_late and task.reject_on_worker_lost:
        reasons.append("reject_on_worker_lost")
    if getattr(task, "retry_on_worker_lost", False):
        reasons.append("retry_on_worker_lost")
    if getattr(task, "autoretry_for", ()):
        reasons.append("autoretry_for")
    if calls_retry(task):
        reasons.append(".retry(")
    return reasons


def proof_problems(test: Callable, task) -> list[str]:
    """Why ``test`` does not prove ``task`` safe to run twice on a worker (empty: it does).

    Structural, and so checkable: the test asks for a worker subprocess fixture; the test (or a
    tests/ helper it calls by name) refers to the task object itself; and it kills a process
    (os.kill, killpg, send_signal, terminate, a kill helper, or the task's database session
    with pg_terminate_backend) or redelivers a message (apply_async with the task_id of an
    earlier delivery: what a redelivery is on the wire).
    """
    problems = []
    fixtures = set(inspect.signature(test).parameters)
    if not fixtures & SUBPROCESS_WORKERS:
        problems.append(
            f"starts no worker subprocess (asks for none of {sorted(SUBPROCESS_WORKERS)})"
        )
    refers, kills = False, False
    for fn in called_functions(test, "tests."):
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        names = getattr(fn, "__globals__", {})
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and is_task(found := names.get(node.id)):
                refers |= found.name == task.name  # a shared_task is a proxy of app.tasks[...]
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                kills |= KILL_SQL in node.value
            if isinstance(node, ast.Call):
                func = node.func
                callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                kills |= callee in KILLS
                kills |= callee == "apply_async" and any(k.arg == "task_id" for k in node.keywords)
    if not refers:
        problems.append(f"never refers to {task.name}")
    if not kills:
        problems.append("kills no process and redelivers no message")
    return problems


# ---------------------------------------------------------------- the rules


def json_safe(hint: object) -> bool:
    """Would this annotation survive a JSON round trip as the same kind of value?"""
    if hint in JSON_SCALARS or hint is None:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return all(json_safe(a) for a in args)
    if origin is list:
        return all(json_safe(a) for a in args)
    if origin is dict:
        return args == () or (args[0] is str and json_safe(args[1]))
    return False


def test_the_app_has_tasks_to_check():
    assert len(pattern_tasks()) >= 1


@pytest.mark.parametrize("task", pattern_tasks(), ids=task_label)
def test_1_arguments_are_serializable(task):
    """JSON only, and every parameter annotated with a JSON type: ids, not model instances."""
    from snippets.project.celery import app

    assert task.serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.result_accept_content == ["json"]
    hints = typing.get_type_hints(task.run)
    params = [p for p in inspect.signature(task.run).parameters.values() if p.name != "self"]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            pytest.fail(f"{task.name}: *args/**kwargs hide what is sent; name the parameters")
        assert param.name in hints, f"{task.name}: parameter {param.name!r} has no annotation"
        assert json_safe(hints[param.name]), (
            f"{task.name}: {param.name}: {hints[param.name]!r} is not a JSON type; pass an id"
        )


def rule_2_failures(task, proofs: list[MarkedTest]) -> list[str]:
    """Rule 2 for one task: empty when it cannot run twice or a marked test proves it."""
    if not can_run_twice(task):
        return []
    if not proofs:
        return [f"no test is marked proves_idempotent({task.name})"]
    verdicts = {p.node_id: proof_problems(p.function, task) for p in proofs}
    if any(not problems for problems in verdicts.values()):
        return []
    return [f"{node}: {'; '.join(problems)}" for node, problems in verdicts.items()]


@pytest.mark.parametrize(
    "task", [t for t in pattern_tasks() if task_label(t) not in NOT_YET_PROVED], ids=task_label
)
def test_2_tasks_that_can_run_twice_are_proved_idempotent_on_a_worker(task):
    """A task that can run twice has a test that kills or redelivers it on a worker subprocess."""
    failures = rule_2_failures(task, proofs_by_task().get(task.name, []))
    assert not failures, f"{task.name} can run twice ({', '.join(can_run_twice(task))}):\n" + (
        "\n".join(failures)
    )


def test_2_the_list_of_tasks_not_yet_proved_is_exact():
    proofs = proofs_by_task()
    unproved = {
        task_label(t) for t in pattern_tasks() if rule_2_failures(t, proofs.get(t.name, []))
    }
    assert unproved - NOT_YET_PROVED == set(), "prove these tasks (a test marked proves_idempotent)"
    assert NOT_YET_PROVED - unproved == set(), "proved now (or gone): remove from NOT_YET_PROVED"


# The test of the test: rule 2 rejects a proof that only calls .delay, or that runs the task
# in-thread, or that kills a worker that never ran it.
def _fake_proof_that_only_delays(celery_worker):
    """Marked proves_idempotent, but the task runs once, in-thread, and nothing dies."""
    from snippets.task_design.idempotency import credit_account

    credit_account.delay(1, 100, "fake-key").get(timeout=10)


def _fake_proof_that_delays_on_a_subprocess(worker_process):
    from snippets.task_design.idempotency import credit_account

    credit_account.apply_async((1, 100, "fake-key"), queue=worker_process().queue).get(10)


def _fake_proof_that_kills_without_the_task(shared_prefork_worker):
    os.kill(shared_prefork_worker.pid, 9)


REAL_PROOF = "test_sigkill_mid_task_runs_it_again_and_the_key_credits_once"


def test_2_rejects_a_proof_that_does_not_kill_or_redeliver_the_task():
    from snippets.task_design.idempotency import credit_account

    assert can_run_twice(credit_account) == ["acks_late", "reject_on_worker_lost"]
    fakes = {
        _fake_proof_that_only_delays: ["starts no worker", "kills no process"],
        _fake_proof_that_delays_on_a_subprocess: ["kills no process"],
        _fake_proof_that_kills_without_the_task: ["never refers to"],
    }
    for fake, why in fakes.items():
        failures = rule_2_failures(credit_account, [MarkedTest(f"fake::{fake.__name__}", fake)])
        assert failures, f"{fake.__name__} was accepted as a proof"
        for reason in why:
            assert reason in failures[0], failures
    [real] = [t for t in marked_tests() if t.node_id.endswith("::" + REAL_PROOF)]
    assert rule_2_failures(credit_account, [real]) == []
    # A task that retries only through a helper is still seen to retry.
    from snippets.recipes.csv_import import import_products

    assert ".retry(" in can_run_twice(import_products)


def test_3_every_failure_is_logged_with_context():
    """One task_failure receiver, for every sender; its fields are proved on a real worker by
    tests/error_handling/test_failure_logging.py."""
    from celery.signals import task_failure
    from celery.utils.dispatch.signal import NONE_ID

    from snippets.error_handling.failure_logging import log_task_failure

    # A receiver's key is (receiver id, sender id); connected with sender="one.task" its
    # sender id is that name's, so this fails for a receiver that covers one task only.
    senders = [key[1] for (key, ref) in task_failure.receivers if ref() is log_task_failure]
    assert senders == [NONE_ID]
    proof = "tests/error_handling/test_failure_logging.py::"
    assert proof + "test_a_failing_task_is_logged_once_with_its_context" in {
        t.node_id for t in marked_tests()
    }


# ---------------------------------------------------------------- limits below redelivery


def redis_visibility_timeout() -> int:
    """The recommended settings' visibility_timeout, else kombu's Redis transport default."""
    from kombu.transport.redis import Channel

    from snippets.project.celery import app

    return int(
        app.conf.broker_transport_options.get("visibility_timeout", Channel.visibility_timeout)
    )


def rabbitmq_consumer_timeout() -> int | None:
    """RabbitMQ's consumer_timeout in seconds: the server's rabbitmq.conf, else its default."""
    conf = Path("/etc/rabbitmq/rabbitmq.conf")
    if conf.is_file() and (
        m := re.search(r"^consumer_timeout\s*=\s*(\d+)", conf.read_text(), re.M)
    ):
        return int(m[1]) // 1000
    for app_file in Path("/usr/lib/rabbitmq/lib").glob(
        "rabbitmq_server-*/plugins/rabbit-*/ebin/rabbit.app"
    ):
        if m := re.search(r"\{consumer_timeout,\s*(\d+)\}", app_file.read_text()):
            return int(m[1]) // 1000
    return None


def retry_backoff_max_default() -> int:
    """Celery's own default for retry_backoff_max, read from the installed source."""
    from celery.app import autoretry

    return int(re.search(r"'retry_backoff_max', (\d+)", inspect.getsource(autoretry))[1])


def delays_of(task) -> dict[str, float]:
    """The task's hard time limit and the countdowns its retries wait, in seconds."""
    from snippets.project.celery import app

    delays = {"hard time limit": task.time_limit or app.conf.task_time_limit}
    if getattr(task, "autoretry_for", ()) or calls_retry(task):
        delays["default_retry_delay"] = task.default_retry_delay
        if getattr(task, "retry_backoff", False):
            delays["retry_backoff_max"] = getattr(
                task, "retry_backoff_max", retry_backoff_max_default()
            )
        if (countdown := getattr(task, "retry_kwargs", {}).get("countdown")) is not None:
            delays["retry_kwargs countdown"] = countdown
    return delays


def seconds_of(node: ast.expr) -> float | None:
    """A literal countdown, or the largest ``timedelta(...)`` of literals in an eta expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    spans = []
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "timedelta":
            kwargs = {
                k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)
            }
            if len(kwargs) == len(call.keywords) and not call.args:
                spans.append(timedelta(**kwargs).total_seconds())
    return max(spans, default=None)


def snippet_files() -> list[Path]:
    return sorted(p for p in (ROOT / "snippets").rglob("*.py") if "migrations" not in p.parts)


def exempt_lines(path: Path) -> set[int]:
    """Lines of this file that are a marked anti-pattern (a whole file, a section, a task)."""
    from snippets.project.celery import app

    rel = path.relative_to(ROOT).as_posix()
    text = path.read_text().splitlines()
    lines: set[int] = set()
    for target in antipattern_targets():
        if target in app.tasks:
            task = app.tasks[target]
            fn = inspect.unwrap(getattr(task, "_orig_run", task.run))
            if inspect.getsourcefile(fn) == str(path):
                source, start = inspect.getsourcelines(fn)
                lines |= set(range(start, start + len(source)))  # from its first decorator
            continue
        file, _, section = str(target).partition(":")
        if file != rel:
            continue
        if not section:
            return set(range(1, len(text) + 1))
        inside = False
        for number, line in enumerate(text, 1):
            inside = (inside or f"[start:{section}]" in line) and f"[end:{section}]" not in line
            if inside:
                lines.add(number)
    return lines


def enclosing_function(tree: ast.Module, line: int) -> str:
    best = "<module>"
    for node in ast.walk(tree):
        function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if function and node.lineno <= line <= (node.end_lineno or node.lineno):
            best = node.name
    return best


def publishes_inside_atomic(tree: ast.Module) -> Iterator[ast.Call]:
    """``.delay(``/``.apply_async(`` called directly inside ``with ... atomic(...)``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        atomic = any(
            isinstance(item.context_expr, ast.Call)
            and (
                getattr(item.context_expr.func, "attr", "") == "atomic"
                or getattr(item.context_expr.func, "id", "") == "atomic"
            )
            for item in node.items
        )
        if not atomic:
            continue
        todo: list[ast.AST] = list(node.body)
        while todo:
            current = todo.pop()
            if isinstance(current, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef):
                continue  # deferred: on_commit(lambda: ...) publishes after the commit
            if isinstance(current, ast.Call) and getattr(current.func, "attr", "") in (
                "delay",
                "apply_async",
            ):
                yield current
            todo.extend(ast.iter_child_nodes(current))


def violations() -> dict[str, str]:
    """Every violation of rules 4 and 5 in pattern code: 'file:function: what' -> where/why."""
    found = {}
    limits = [redis_visibility_timeout()] + [t for t in [rabbitmq_consumer_timeout()] if t]
    for path in snippet_files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        exempt = exempt_lines(path)
        for call in publishes_inside_atomic(tree):
            if call.lineno not in exempt:
                key = f"{rel}:{enclosing_function(tree, call.lineno)}: publish inside atomic"
                found[key] = f"line {call.lineno}: publish with transaction.on_commit instead"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or node.lineno in exempt:
                continue
            for keyword in node.keywords:
                seconds = seconds_of(keyword.value) if keyword.arg in ("countdown", "eta") else None
                if seconds is not None and seconds >= min(limits):
                    key = f"{rel}:{enclosing_function(tree, node.lineno)}: {keyword.arg}"
                    found[key] = f"line {node.lineno}: {seconds:.0f} s >= {min(limits)} s"
    return found


def check_rule(suffixes: tuple[str, ...]) -> None:
    found = {k: v for k, v in violations().items() if k.endswith(suffixes)}
    known = {k for k in KNOWN_VIOLATIONS if k.endswith(suffixes)}
    assert set(found) - known == set(), found
    assert known - set(found) == set(), "fixed: remove it from KNOWN_VIOLATIONS"


def test_4_no_countdown_or_eta_in_pattern_code_reaches_a_redelivery_window():
    """A literal countdown, or an eta of now + timedelta(...), in any snippet outside a marked
    anti-pattern stays below the visibility timeout and consumer_timeout."""
    check_rule((": countdown", ": eta"))


def test_5_no_publish_inside_atomic_in_pattern_code():
    """No .delay()/.apply_async() directly inside `with transaction.atomic()` in any snippet
    outside a marked anti-pattern (on_commit(lambda: ...) is deferred, so it passes)."""
    check_rule((": publish inside atomic",))


def test_5_the_atomic_rule_catches_a_publish_inside_atomic():
    """The test of the rule: the transactions page's anti-pattern is found, on_commit is not."""
    tree = ast.parse((ROOT / "snippets/django_integration/transactions.py").read_text())
    names = {enclosing_function(tree, call.lineno) for call in publishes_inside_atomic(tree)}
    assert "create_report_too_early" in names
    assert "create_report" not in names  # the pattern: on_commit(lambda: ... .delay(...))


@pytest.mark.parametrize("task", pattern_tasks(), ids=task_label)
def test_4_time_limits_and_retry_countdowns_stay_below_the_redis_visibility_timeout(task):
    from snippets.project.celery import app

    soft = task.soft_time_limit or app.conf.task_soft_time_limit
    assert soft is not None, f"{task.name} has no soft time limit"
    visibility = redis_visibility_timeout()
    for what, seconds in delays_of(task).items():
        assert seconds is not None, f"{task.name} has no {what}"
        assert seconds < visibility, f"{task.name}: {what} {seconds} s >= visibility {visibility}"
    assert soft < delays_of(task)["hard time limit"], f"{task.name}: soft {soft} >= hard"


@pytest.mark.services("rabbitmq")
@pytest.mark.parametrize("task", pattern_tasks(), ids=task_label)
def test_4_time_limits_and_retry_countdowns_stay_below_rabbitmq_consumer_timeout(task):
    consumer = rabbitmq_consumer_timeout()
    assert consumer, "RabbitMQ runs but its consumer_timeout was not found in its files"
    for what, seconds in delays_of(task).items():
        assert seconds < consumer, f"{task.name}: {what} {seconds} s >= consumer_timeout {consumer}"


# ---------------------------------------------------------------- the marks themselves


def test_every_antipattern_mark_resolves_and_every_exempt_task_is_shown_failing():
    """A mark's target is a task or a snippets/ path[:section] that exists; an anti-pattern
    task is exempt from the rules only because a test marks it."""
    for test in marked_tests():
        for target in test.args_of("antipattern"):
            if is_task(target):
                continue
            assert isinstance(target, str), f"{test.node_id}: {target!r} is no task or path"
            assert not (why := resolve_snippet(target)), f"{test.node_id}: {why}"
    exempt = {t.name for t in snippet_tasks()} - {t.name for t in pattern_tasks()}
    assert exempt <= set(antipattern_targets())


def test_every_proves_idempotent_mark_names_a_task():
    for test in marked_tests():
        for task in test.args_of("proves_idempotent"):
            assert is_task(task), f"{test.node_id}: {task!r} is not a task of the app"


def test_every_registered_marker_is_read():
    """No marker exists that nothing reads: each one pyproject registers is read here, by the
    conftest (services), by the docs hook (deviation) or by the browser session."""
    import tomllib

    readers = {
        "proves_idempotent": "tests/test_checklist.py",
        "antipattern": "tests/test_checklist.py",
        "services": "tests/conftest.py",
        "deviation": "docs/hooks/proofs.py",
        "browser": "pyproject.toml",
        "django6": "tests/django_integration/conftest.py",  # deselected by addopts "-m not browser"
        "once": ".ci/run",  # the RabbitMQ run deselects it: -m "not browser and not once"
    }
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    registered = [
        m.split("(")[0].split(":")[0] for m in config["tool"]["pytest"]["ini_options"]["markers"]
    ]
    for name in registered:
        assert name in readers, f"marker {name!r} is registered and read by nothing known"
        assert name in (ROOT / readers[name]).read_text(), f"{readers[name]} does not read {name}"


def test_a_mark_target_that_does_not_resolve_is_rejected():
    """Free text, a missing file and a missing section are all refused."""
    assert resolve_snippet("one queue for every kind of task")
    assert resolve_snippet("snippets/no_such_page.py")
    assert resolve_snippet("snippets/task_design/idempotency.py:no_such_section")
    assert resolve_snippet("snippets/task_design/idempotency.py:task") is None
    assert resolve_snippet("snippets/production/Dockerfile.antipattern") is None


def test_snippets_carry_no_test_bookkeeping():
    """The code a page shows is plain Celery: no proof or anti-pattern option on a task, no
    constant naming a test; the tests' marks are the only link."""
    found = []
    for path in snippet_files():
        tree = ast.parse(path.read_text())
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in (
                "proved_idempotent_by",
                "antipattern",
            ):
                found.append(f"{rel}:{node.value.lineno}: {node.arg}=")
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and re.search(r"tests/\S+\.py::", text):
                found.append(f"{rel}:{node.lineno}: names a test: {text!r}")
    assert found == []
