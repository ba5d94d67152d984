"""The checks: each reads the project and yields a Finding per trap, with the page that fixes it."""

from __future__ import annotations

import ast
import difflib
import fnmatch
import inspect
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from celery import Task
from celery.schedules import crontab, schedule
from celery.signals import task_failure

from .findings import ERROR, WARNING, Finding, Project
from .system_check import KNOWN_SETTINGS, check_celery_settings, redelivery_window

# The system check's messages, as findings: (check, object or None for "the setting named
# first in the message", page).
SYSTEM_CHECK = {
    "celery.E001": ("unknown-setting", None, "configuration/production-settings/"),
    "celery.W002": ("old-setting-name", None, "configuration/production-settings/"),
    "celery.E002": ("serializer", "setting:CELERY_ACCEPT_CONTENT", "production/security/"),
    "celery.E003": ("time-limits", "setting:CELERY_TASK_TIME_LIMIT", "error-handling/timeouts/"),
    "celery.W001": ("worker-lost", "setting:CELERY_TASK_ACKS_LATE", "error-handling/worker-loss/"),
}
WHY = {
    "celery.E001": "Celery ignores it ({msg}): the setting it was meant to be keeps its default.",
    "celery.W002": "{msg}: Celery 6 drops the old names, and mixing both kinds fails at startup.",
    "celery.E002": "Whoever can publish a pickle message can run code on the worker ({msg}).",
    "celery.E003": "A task without finite limits below the broker's redelivery runs forever or "
    "twice ({msg}).",
    "celery.W001": "A late-acked task whose pool child dies is acknowledged and lost ({msg}).",
}
IDEMPOTENT = re.compile(r"idempot|twice|at most once|exactly once|run again", re.I)


def settings(project: Project) -> Iterator[Finding]:
    """The Django system check (unknown and old names, JSON only, global limits, worker loss)."""
    for message in check_celery_settings(consumer_timeout=project.consumer_timeout):
        check, obj, page = SYSTEM_CHECK[message.id]
        severity = ERROR if message.is_serious() else WARNING
        obj = obj or f"setting:{message.msg.split()[0]}"
        why = WHY[message.id].format(msg=message.msg)
        if message.id == "celery.E001":
            name = obj.removeprefix("setting:")
            if close := difflib.get_close_matches(name, KNOWN_SETTINGS, n=1, cutoff=0.85):
                why += f" Did you mean {close[0]}?"
            else:  # nothing like it: the project's own setting under Celery's prefix
                severity = WARNING
                why = f"{name} is no Celery setting and looks like none: if it is your own, "
                why += "acknowledge it; if it was meant for Celery, Celery never reads it."
        yield Finding(check, severity, obj, why, page)


# --8<-- [start:task_checks]
def tasks(project: Project) -> Iterator[Finding]:
    """Each registered task with the options it really runs with (its own over the settings)."""
    conf = project.conf
    what, window = redelivery_window(conf, project.consumer_timeout)
    for task in project.user_tasks():
        obj = f"task:{task.name}"
        soft = task.soft_time_limit or conf.task_soft_time_limit  # None: the worker's default
        hard = task.time_limit or conf.task_time_limit
        if (soft, hard) != (conf.task_soft_time_limit, conf.task_time_limit):  # (1)!
            if not (soft and hard and soft < hard):
                why = f"soft {soft} / hard {hard}: it needs a soft limit to clean up, then a hard."
                yield Finding("time-limits", ERROR, obj, why, "error-handling/timeouts/")
            elif hard >= window and task.acks_late:
                why = f"Its hard limit {hard} s is not below the {what} ({window} s): run twice."
                yield Finding("redelivery-window", ERROR, obj, why, "error-handling/timeouts/")
        backoff = getattr(task, "retry_backoff", False)  # set by autoretry_for
        countdown = getattr(task, "retry_backoff_max", 600) if backoff else task.default_retry_delay
        if countdown and countdown >= window:  # (2)!
            why = f"A retry waits up to {countdown} s unacked, past the {what} ({window} s)."
            yield Finding("redelivery-window", ERROR, obj, why, "error-handling/retries/")
        if task.serializer not in {"json", conf.task_serializer}:  # the global: system check
            why = f"It sends its arguments as {task.serializer}; only JSON is safe to accept."
            yield Finding("serializer", ERROR, obj, why, "production/security/")
        retrying = bool(getattr(task, "autoretry_for", ())) or ".retry(" in source(task)
        if (task.acks_late or retrying) and not IDEMPOTENT.search(task.__doc__ or ""):  # (3)!
            why = "It can run twice (late ack or retry) and its docstring says nothing of how "
            why += "a second run is harmless."
            yield Finding("idempotency", WARNING, obj, why, "task-design/idempotency/")
        if task.acks_late and task.reject_on_worker_lost:
            limit = delivery_limit(project, task)
            if limit == "quorum":
                why = "Its quorum queue sets no x-delivery-limit: RabbitMQ 4 ends the loop at its "
                why += "default limit, RabbitMQ 3 requeues a message that kills its worker forever."
                yield Finding("poison-loop", WARNING, obj, why, "error-handling/worker-loss/")
            elif not limit:
                why = "A message that kills its worker is requeued forever: a poison-message loop."
                yield Finding("poison-loop", ERROR, obj, why, "error-handling/worker-loss/")


# --8<-- [end:task_checks]


def source(task: Task) -> str:
    try:
        return inspect.getsource(task.run)
    except (OSError, TypeError):
        return ""


def delivery_limit(project: Project, task: Task) -> str:
    """What bounds redeliveries on the task's queue: "x-delivery-limit" (RabbitMQ), "quorum"
    (a quorum queue: RabbitMQ 4's default limit, none on RabbitMQ 3), or "" (nothing)."""
    queue = project.app.amqp.router.route({}, task.name)["queue"]
    arguments = queue.queue_arguments or {}
    if "x-delivery-limit" in arguments:
        return "x-delivery-limit"
    return "quorum" if arguments.get("x-queue-type") == "quorum" else ""


def connection_loss(project: Project) -> Iterator[Finding]:
    conf = project.conf
    late = any(t.acks_late for t in project.user_tasks())
    if late and not conf.worker_cancel_long_running_tasks_on_connection_loss:
        why = "A late-acked task still running when the broker connection drops runs again."
        obj = "setting:CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS"
        yield Finding("connection-loss", WARNING, obj, why, "configuration/production-settings/")


def failure_logging(project: Project) -> Iterator[Finding]:
    """A task_failure receiver, on_failure on every task, or a LOGGING config that routes the
    logger Celery reports failures on (celery.app.trace) somewhere of the project's choosing."""
    overridden = [t for t in project.user_tasks() if type(t).on_failure is not Task.on_failure]
    loggers = set(project.logging.get("loggers", {}))
    routed = bool(loggers & {"celery", "celery.app.trace"})
    if not (task_failure.receivers or routed) and len(overridden) < len(project.user_tasks()):
        why = "No task_failure receiver: a failed task leaves no line with its id, name and args."
        yield Finding(
            "failure-logging",
            WARNING,
            "signal:task_failure",
            why,
            "error-handling/failure-logging/",
        )


# --8<-- [start:beat_checks]
def beat(project: Project) -> Iterator[Finding]:
    """Beat entries (settings and django-celery-beat rows): the task exists, the crontab says
    what it means, and an interval's last run survives a restart."""
    file_scheduler = "django" not in str(project.conf.beat_scheduler)
    for entry in project.periodic:
        obj = f"schedule:{entry.name}"
        if entry.task not in project.app.tasks:
            why = f"It sends {entry.task}, which no worker of this app has registered."
            yield Finding("unknown-task", ERROR, obj, why, "periodic-tasks/beat/")
        s = entry.schedule
        if isinstance(s, crontab) and str(s._orig_minute) == "*" and str(s._orig_hour) != "*":
            why = f"hour={s._orig_hour} with minute left at '*' runs every minute of that hour."
            yield Finding(
                "crontab-minute", ERROR, obj, why, "periodic-tasks/crontab-and-timezones/"
            )
        if isinstance(s, schedule) and entry.source == "beat_schedule" and file_scheduler:
            for process in project.deployment.beats():
                default = project.conf.beat_schedule_filename  # without --schedule
                if process.option("-S", "--scheduler") or process.schedule_is_persistent(default):
                    continue
                why = f"Beat's schedule file in {process.source} is lost on restart, and the "
                why += "interval starts again from zero: a restart loop never runs it."
                yield Finding("schedule-file", WARNING, obj, why, "periodic-tasks/beat/")


# --8<-- [end:beat_checks]


def route_table(project: Project) -> list[tuple[str, str | None]]:
    """(pattern, queue) of every route given as a dict (router functions cannot be read)."""
    routes = project.conf.task_routes or ()
    tables = [routes] if isinstance(routes, dict) else [r for r in routes if isinstance(r, dict)]
    out = []
    for table in tables:
        for pattern, target in table.items():
            queue = target.get("queue") if isinstance(target, dict) else target
            out.append((str(pattern), getattr(queue, "name", queue)))
    return out


def routes(project: Project) -> Iterator[Finding]:
    """Routes name registered tasks, and every routed queue has a worker consuming it."""
    names = list(project.app.tasks)
    for pattern, _queue in route_table(project):
        if not fnmatch.filter(names, pattern):
            why = f"No registered task matches {pattern}: the route never applies."
            yield Finding("unknown-task", ERROR, f"route:{pattern}", why, "configuration/routing/")
    workers = project.deployment.workers()
    if not workers or project.deployment.unresolved:
        return  # no command line to compare with: say nothing rather than guess
    conf = project.conf
    default = {q.name for q in conf.task_queues} if conf.task_queues else {conf.task_default_queue}
    consumed = set().union(*(w.queues() or default for w in workers))
    routed = {q for _p, q in route_table(project) if q}
    routed |= {t.queue for t in project.user_tasks() if getattr(t, "queue", None)}
    routed |= {e.options["queue"] for e in project.periodic if "queue" in e.options}
    for queue in sorted(routed - consumed):
        why = f"Tasks are routed to {queue!r}, and no worker command line consumes it."
        yield Finding("unconsumed-queue", ERROR, f"queue:{queue}", why, "configuration/routing/")


def results(project: Project) -> Iterator[Finding]:
    conf = project.conf
    backend = conf.result_backend
    if not backend or backend == "disabled":
        if any(chords(project)):
            why = (
                "A chord's callback waits for its header's results: no result backend, no callback."
            )
            yield Finding("result-backend", ERROR, "setting:CELERY_RESULT_BACKEND", why,
                          "task-design/canvas/")  # fmt: skip
        return
    yield from chord_ignore_result(project)
    if not conf.result_expires:
        why = "Results never expire: the backend grows until Redis evicts or the disk fills."
        obj = "setting:CELERY_RESULT_EXPIRES"
        yield Finding("result-expires", WARNING, obj, why, "configuration/result-backends/")
    if same_redis_db(conf.broker_url, backend):
        why = "Broker and results share one Redis DB: a FLUSHDB or an eviction hits both."
        obj = "setting:CELERY_RESULT_BACKEND"
        yield Finding("shared-redis-db", WARNING, obj, why, "configuration/result-backends/")


# --8<-- [start:chords]
SIGNATURE = {"s", "si", "signature", "subtask"}  # task.s(...): a signature of that task


def chords(project: Project) -> Iterator[tuple[Any, ast.expr]]:
    """(module, header) of each chord the modules of the project's tasks build:
    `chord(header, ...)` or `chord(header=...)`, and `group(...) | callback` (a group chained
    to a task is a chord). A header held in a variable is followed to what the same function
    assigns or appends to it."""
    modules = {inspect.getmodule(t.run) for t in project.user_tasks()} - {None}
    for module in sorted(modules, key=lambda m: m.__name__):
        tree = ast.parse(inspect.getsource(module))
        scopes = {}  # node -> the function (or module) it is in
        for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))]:
            scopes |= {node: scope for node in ast.walk(scope)}
        for node in ast.walk(tree):
            header = None
            if isinstance(node, ast.Call) and called(node.func) == "chord":
                keywords = [k.value for k in node.keywords if k.arg == "header"]
                header = (node.args or keywords or [None])[0]
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # noqa: SIM102
                if isinstance(node.left, ast.Call) and called(node.left.func) == "group":
                    header = node.left
            if header is not None:
                yield module, header
            if isinstance(header, ast.Name):
                yield from ((module, v) for v in filled(scopes[node], header.id))


def chord_ignore_result(project: Project) -> Iterator[Finding]:
    """A header task that ignores its result (its own ignore_result, or the setting's)."""
    redis = str(project.conf.result_backend).startswith(("redis", "rediss", "sentinel"))
    seen = set()
    for module, header in chords(project):
        for part in ast.walk(header):
            if not (isinstance(part, ast.Call) and isinstance(part.func, ast.Attribute)):
                continue
            task = resolve(part.func.value, vars(module)) if part.func.attr in SIGNATURE else None
            if not isinstance(task, Task) or not task.ignore_result or task.name in seen:
                continue
            seen.add(task.name)
            where = f"{module.__name__}, line {part.lineno}"
            if redis:  # (1)!
                why = f"A chord header part ({where}) with ignore_result: only Redis passes its "
                why += "return value on; any other result backend never runs the callback."
            else:
                why = f"A chord header part ({where}) with ignore_result: this backend never sees "
                why += "its result, so the chord's callback never runs."
            yield Finding("chord-ignore-result", WARNING if redis else ERROR, f"task:{task.name}",
                          why, "configuration/result-backends/")  # fmt: skip


# --8<-- [end:chords]


def filled(scope: ast.AST, name: str) -> Iterator[ast.expr]:
    """What a function assigns to `name` (`x = [...]`) or adds (`x.append(...)`)."""
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            yield node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"append", "extend", "insert"}
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == name
        ):
            yield from node.args


def called(func: ast.expr) -> str:
    """The name a call is made by: `chord(...)`, `celery.chord(...)`."""
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    """The object a name or dotted name stands for in a module (None if not a plain name)."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        return getattr(resolve(node.value, names), node.attr, None)
    return None


def same_redis_db(broker: Any, backend: Any) -> bool:
    a, b = urlsplit(str(broker)), urlsplit(str(backend))
    redis = {"redis", "rediss"}
    db = lambda u: u.path.strip("/") or "0"  # noqa: E731
    return a.scheme in redis and b.scheme in redis and (a.netloc, db(a)) == (b.netloc, db(b))


def fallbacks(project: Project) -> Iterator[Finding]:
    """A non-DEBUG settings module whose broker or backend is a default written in the code."""
    if project.debug:
        return
    conf = project.conf
    from_env = set(project.environ.values())
    for name, url in (("BROKER_URL", conf.broker_url), ("RESULT_BACKEND", conf.result_backend)):
        if url is None and name == "BROKER_URL":
            why = "No broker URL: Celery falls back to amqp://guest@localhost//."
        elif isinstance(url, str) and url not in from_env and local(url):
            why = f"{url.split('://')[0]}:// on this host is written in the settings, not read "
            why += "from the environment: a deploy that forgets the variable runs on it."
        else:
            continue
        yield Finding("fallback-url", ERROR, f"setting:CELERY_{name}", why, "project/")


def local(url: str) -> bool:
    """memory://, or a Redis or RabbitMQ URL on this host (no host at all means localhost)."""
    parts = urlsplit(url)
    networked = parts.scheme in {"redis", "rediss", "amqp", "amqps", "pyamqp"}
    here = parts.hostname in {"localhost", "127.0.0.1", "::1", None}
    return "memory" in parts.scheme or (networked and here)


CHECKS = (settings, tasks, connection_loss, failure_logging, beat, routes, results, fallbacks)
