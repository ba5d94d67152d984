"""The verify checklist (docs/checklist.md), enforced over every task of the snippets app.

A deliberate anti-pattern task carries ``antipattern="tests/...py::test_name"`` (the test
that shows it failing) and is exempt from the rules; every other task must hold all four.
"""

from __future__ import annotations

import ast
import inspect
import types
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JSON_SCALARS = {int, float, str, bool, type(None)}


def snippet_tasks() -> list:
    from snippets.project.celery import app

    # Django imported every page module when the apps loaded (SnippetsAppConfig.ready); the
    # loader's import_default_modules would also run Django's checks, which query the database.
    return sorted(
        (t for name, t in app.tasks.items() if name.startswith("snippets.")), key=lambda t: t.name
    )


def is_antipattern(task) -> bool:
    return bool(getattr(task, "antipattern", None))


def pattern_tasks() -> list:
    return [t for t in snippet_tasks() if not is_antipattern(t)]


def task_label(task) -> str:
    return task.name.removeprefix("snippets.")


def names_a_test(node_id: str) -> bool:
    """`tests/x/test_y.py::test_z` names a test function defined in that file."""
    path, _, name = node_id.partition("::")
    file = ROOT / path
    if not (path.startswith("tests/") and file.is_file() and name):
        return False
    tree = ast.parse(file.read_text())
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name.split("[")[0]
        for node in ast.walk(tree)
    )


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


def retries(task) -> bool:
    """Does the task retry, by autoretry_for, by self.retry(), or on worker loss?"""
    source = inspect.getsource(task.run) if hasattr(task.run, "__code__") else ""
    return bool(
        getattr(task, "autoretry_for", ())
        or ".retry(" in source
        or getattr(task, "retry_on_worker_lost", False)
    )


@pytest.mark.parametrize("task", pattern_tasks(), ids=task_label)
def test_2_retried_tasks_are_proved_idempotent(task):
    """A task that retries names the redelivery test that proves it does its work once."""
    if not retries(task):
        return
    proof = getattr(task, "proved_idempotent_by", None)
    assert proof, f"{task.name} retries: set proved_idempotent_by='tests/...::test_...'"
    assert names_a_test(proof), f"{task.name}: {proof} is not a test in this repository"


def test_3_every_failure_is_logged_with_context():
    """One task_failure receiver, for every sender; its fields are proved on a real worker by
    tests/error_handling/test_failure_logging.py."""
    from celery.signals import task_failure

    from snippets.error_handling.failure_logging import log_task_failure

    receivers = {ref() for (_key, ref) in task_failure.receivers}
    assert log_task_failure in receivers
    assert names_a_test(
        "tests/error_handling/test_failure_logging.py::"
        "test_a_failing_task_is_logged_once_with_its_context"
    )


@pytest.mark.parametrize("task", pattern_tasks(), ids=task_label)
def test_4_every_task_has_finite_time_limits_below_the_visibility_timeout(task):
    from snippets.project.celery import app

    soft = task.soft_time_limit or app.conf.task_soft_time_limit
    hard = task.time_limit or app.conf.task_time_limit
    visibility = app.conf.broker_transport_options.get("visibility_timeout", 3600)
    assert soft is not None, f"{task.name} has no soft time limit"
    assert hard is not None, f"{task.name} has no hard time limit"
    assert soft < hard < visibility, f"{task.name}: need soft {soft} < hard {hard} < {visibility}"


@pytest.mark.parametrize(
    "task", [t for t in snippet_tasks() if is_antipattern(t)] or [None], ids=lambda t: str(t)
)
def test_antipattern_tasks_are_shown_failing(task):
    """An exempt task must name the test that shows it failing."""
    if task is None:
        return
    assert names_a_test(task.antipattern), f"{task.name}: {task.antipattern} not found"
