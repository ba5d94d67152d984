"""Build-time hooks: facts on the site are generated, never typed.

* ``<!-- tested-versions -->`` becomes a table of the versions this build ran with (Python
  packages from the environment, services from their own version commands).
* ``<!-- patterns-a-z -->`` becomes the A-Z index of pattern pages (every page of a section,
  with its front-matter description).
* ``<!-- bench: NAME -->`` becomes the row ``NAME`` of ``assets/data/bench-results.txt`` (the
  file ``nox -s bench`` writes) as a one-row table with its stamp; ``<!-- bench: NAME | COLUMN -->``
  becomes one cell of it (``ratio``, ``baseline result``, ...). ``<!-- chaos: SCENARIO / VARIANT /
  BROKER -->`` does the same with ``chaos-results.txt`` (``nox -s chaos``), ``<!-- search: NAME
  -->`` with ``search-results.txt`` (``nox -s browser``, ``nox -s search_compare``), ``<!--
  mutants: SECTION/PAGE -->`` with ``mutants-results.txt`` (``nox -s mutants``). A name that
  matches no row fails the build: a measured figure is never typed on a page.
* ``<!-- default: NAME -->`` becomes the default of Celery setting NAME (or of the kombu Redis
  transport option NAME) in the installed version; ``<!-- version: PACKAGE -->`` its version.
* ``<!-- settings-reference -->`` becomes the table of docs/reference/settings.md: every Celery
  setting a page or snippet names, its default, the process that reads it (READERS, checked
  against the Celery source by tests/test_facts.py) and the pages that discuss it.
* ``<!-- error-index -->`` becomes the index of docs/reference/errors.md: every error string
  quoted in backticks in an H2 of a troubleshooting page, linked to its entry (the anchor
  Python-Markdown's toc gives that heading).
* ``site/llms.txt`` lists every page with its description, for tools that read the site.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

PACKAGES = ("celery", "kombu", "django", "django-celery-beat", "flower", "redis", "psycopg")
SERVICES = {
    "Redis server": (["redis-server", "--version"], r"v=(\S+)"),
    "RabbitMQ": (["rabbitmqctl", "-q", "version"], r"(\S+)"),
    "PostgreSQL": (["psql", "--version"], r"(\d+\.\d+)"),
}
SECTION_TITLES = {
    "django-integration": "Django integration",
    "task-design": "Task design",
    "configuration": "Configuration",
    "error-handling": "Error handling",
    "periodic-tasks": "Periodic tasks",
    "monitoring": "Monitoring",
    "production": "Production deployment",
    "recipes": "Worked examples",
    "troubleshooting": "Troubleshooting",
}


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def service_version(cmd: list[str], pattern: str) -> str:
    if not shutil.which(cmd[0]):
        return "not on the build machine"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not answering on the build machine"
    match = re.search(pattern, out)
    return match[1] if match else "unknown"


def versions_table() -> str:
    rows = [f"| {name} | {package_version(name)} |" for name in PACKAGES]
    rows += [f"| {name} | {service_version(*spec)} |" for name, spec in SERVICES.items()]
    return "| Component | Version |\n|---|---|\n" + "\n".join(rows)


def front_matter(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    if text.startswith("---\n"):
        _, meta, body = text.split("---\n", 2)
        return yaml.safe_load(meta) or {}, body
    return {}, text


def pattern_pages(docs_dir: Path) -> list[tuple[str, str, str, str]]:
    """(title, section title, url, description) of every section page but the indexes."""
    found = []
    for path in sorted(docs_dir.glob("*/*.md")):
        section = path.parent.name
        if path.name == "index.md" or section not in SECTION_TITLES:
            continue
        meta, body = front_matter(path)
        heading = re.search(r"^# (.+)$", body, re.MULTILINE)
        title = meta.get("title") or (heading[1] if heading else path.stem)
        url = f"{section}/{path.stem}.md"
        found.append((title, SECTION_TITLES[section], url, meta.get("description", "")))
    return sorted(found, key=lambda row: row[0].lower())


def patterns_index(docs_dir: Path, page_dir: str) -> str:
    prefix = "../" * page_dir.count("/") if page_dir else ""
    lines, letter = [], ""
    for title, section, url, description in pattern_pages(docs_dir):
        if title[0].upper() != letter:
            letter = title[0].upper()
            lines.append(f"\n## {letter}\n")
        lines.append(f"- [{title}]({prefix}{url}) — *{section}*. {description}")
    return "\n".join(lines)


DATA = Path(__file__).resolve().parents[1] / "assets" / "data"
RESULTS = {
    "bench": ("bench-results.txt", "nox -s bench"),
    "chaos": ("chaos-results.txt", "nox -s chaos"),
    "search": ("search-results.txt", "nox -s browser and nox -s search_compare"),
    "mutants": ("mutants-results.txt", "nox -s mutants"),
}
FIGURE = re.compile(
    r"<!-- (?P<kind>bench|chaos|search|mutants): (?P<name>[^|>]+?)(?: \| (?P<column>[^>]+?))? -->"
)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def results(kind: str) -> tuple[str, list[str], list[list[str]]]:
    """(stamp line, header cells, rows as cells) of a results file (tests/results.py's format)."""
    lines = (DATA / RESULTS[kind][0]).read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    return lines[0], cells(table[0]), [cells(line) for line in table[2:]]


def results_row(kind: str, name: str) -> tuple[str, list[str], list[str]]:
    """The row whose first cells are `name` split on " / " (bench: the benchmark; chaos:
    scenario / variant / broker)."""
    stamp, header, rows = results(kind)
    key = [part.strip() for part in name.split(" / ")]
    found = [row for row in rows if row[: len(key)] == key]
    if len(found) != 1:
        raise ValueError(f"<!-- {kind}: {name} --> matches {len(found)} rows of {RESULTS[kind][0]}")
    return stamp, header, found[0]


def figure(kind: str, name: str, column: str | None, page_dir: str) -> str:
    """One cell of a results row, or the row as a table with its stamp and provenance."""
    stamp, header, row = results_row(kind, name)
    if column:
        names = [h.lower() for h in header]
        if column.lower() not in names:
            raise ValueError(f"<!-- {kind}: {name} | {column} -->: no column {column!r}")
        return row[names.index(column.lower())]
    prefix = "../" * len(Path(page_dir).parts) if page_dir else ""
    table = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n| " + " | ".join(row)
    source = (
        f"*{stamp} Written by `{RESULTS[kind][1]}`, not typed; every figure: "
        f"[Proof under failure and load]({prefix}proof.md).*"
    )
    return f"{table} |\n\n{source}"


def expand_figures(markdown: str, page_dir: str) -> str:
    return FIGURE.sub(
        lambda m: figure(m["kind"], m["name"].strip(), m["column"], page_dir), markdown
    )


DOCS = Path(__file__).resolve().parents[1]
SNIPPETS = DOCS.parent / "snippets"
# Who reads each setting the site uses or discusses, and a module of the installed Celery that
# reads it (tests/test_facts.py checks that the module names the setting). worker_* and beat_*
# settings default to the worker and beat; a setting missing here fails the build.
PUBLISHER, WORKER, BEAT, RESULTS_READER = "publisher", "worker", "beat", "result reader"
CONNECTS = "every process that connects to the broker"
READERS: dict[str, tuple[str, str]] = {
    "worker_task_log_format": (WORKER, "celery/app/log.py"),
    "worker_enable_remote_control": (WORKER, "celery/worker/consumer/control.py"),
    "accept_content": (f"{WORKER}, {RESULTS_READER}", "celery/apps/worker.py"),
    "broker_connection_retry": (f"{WORKER}, {BEAT}", "celery/worker/consumer/consumer.py"),
    "broker_connection_retry_on_startup": (f"{WORKER}, {BEAT}", "celery/beat.py"),
    "broker_read_url": (f"{WORKER} (consumes)", "celery/app/base.py"),
    "broker_transport": (CONNECTS, "celery/app/base.py"),
    "broker_transport_options": (CONNECTS, "celery/app/base.py"),
    "broker_connection_timeout": (CONNECTS, "celery/app/base.py"),
    "broker_connection_max_retries": (WORKER, "celery/worker/consumer/consumer.py"),
    "broker_pool_limit": (CONNECTS, "celery/app/base.py"),
    "imports": (f"{WORKER}, {BEAT}", "celery/loaders/base.py"),
    "include": (f"{WORKER}, {BEAT}", "celery/loaders/base.py"),
    "task_acks_on_failure": (WORKER, "celery/app/task.py"),
    "task_acks_on_timeout": (WORKER, "celery/app/task.py"),
    "task_create_missing_queue_exchange_type": (f"{PUBLISHER}, {WORKER}", "celery/app/amqp.py"),
    "security_cert_store": (f"{PUBLISHER}, {WORKER}", "celery/security/__init__.py"),
    "security_certificate": (f"{PUBLISHER}, {WORKER}", "celery/security/__init__.py"),
    "security_key": (f"{PUBLISHER}, {WORKER}", "celery/security/__init__.py"),
    "broker_url": (CONNECTS, "celery/app/base.py"),
    "broker_use_ssl": (CONNECTS, "celery/app/base.py"),
    "broker_write_url": (f"{PUBLISHER}", "celery/app/base.py"),
    "enable_utc": (f"{PUBLISHER} (ETAs), {WORKER}, {BEAT}", "celery/app/base.py"),
    "timezone": (f"{PUBLISHER} (ETAs), {WORKER}, {BEAT}", "celery/app/base.py"),
    "redis_backend_use_ssl": (f"{WORKER}, {RESULTS_READER}", "celery/backends/redis.py"),
    "result_accept_content": (RESULTS_READER, "celery/backends/base.py"),
    "result_backend": (f"{WORKER} (writes), {RESULTS_READER}", "celery/app/base.py"),
    "result_backend_transport_options": (
        f"{WORKER}, {RESULTS_READER}",
        "celery/backends/redis.py",
    ),
    "result_chord_expires": (WORKER, "celery/backends/base.py"),
    "result_chord_retry_interval": (WORKER, "celery/app/builtins.py"),
    "result_expires": (f"{WORKER} (key TTL), {BEAT} (backend_cleanup)", "celery/beat.py"),
    "result_extended": (WORKER, "celery/app/trace.py"),
    "result_failure_expires": (WORKER, "celery/backends/redis.py"),
    "result_serializer": (WORKER, "celery/backends/base.py"),
    "task_acks_late": (WORKER, "celery/app/task.py"),
    "task_acks_on_failure_or_timeout": (WORKER, "celery/app/task.py"),
    "task_allow_error_cb_on_chord_header": (PUBLISHER, "celery/canvas.py"),
    "task_annotations": (f"{PUBLISHER}, {WORKER}", "celery/app/base.py"),
    "task_always_eager": (f"{PUBLISHER} (runs the task in the caller)", "celery/app/task.py"),
    "task_create_missing_queue_type": (f"{PUBLISHER}, {WORKER}", "celery/app/amqp.py"),
    "task_create_missing_queues": (f"{PUBLISHER}, {WORKER}", "celery/app/amqp.py"),
    "task_default_delivery_mode": (PUBLISHER, "celery/app/amqp.py"),
    "task_default_exchange_type": (f"{PUBLISHER}, {WORKER}", "celery/app/amqp.py"),
    "task_default_queue": (f"{PUBLISHER}, {WORKER}", "celery/app/amqp.py"),
    "task_default_queue_type": (f"{PUBLISHER}, {WORKER}", "celery/app/amqp.py"),
    "task_default_rate_limit": (WORKER, "celery/app/task.py"),
    "task_ignore_result": (WORKER, "celery/app/task.py"),
    "task_publish_retry": (PUBLISHER, "celery/app/amqp.py"),
    "task_publish_retry_policy": (PUBLISHER, "celery/app/amqp.py"),
    "task_queues": (f"{WORKER} (consumes), {PUBLISHER}", "celery/app/amqp.py"),
    "task_reject_on_worker_lost": (WORKER, "celery/app/task.py"),
    "task_retry_on_worker_lost": (WORKER, "celery/app/task.py"),
    "task_routes": (PUBLISHER, "celery/app/routes.py"),
    "task_send_sent_event": (PUBLISHER, "celery/app/base.py"),
    "task_serializer": (PUBLISHER, "celery/app/amqp.py"),
    "task_soft_time_limit": (WORKER, "celery/worker/worker.py"),
    "task_time_limit": (WORKER, "celery/worker/worker.py"),
    "task_track_started": (WORKER, "celery/app/task.py"),
    "beat_cron_starting_deadline": (BEAT, "celery/schedules.py"),
    "beat_scheduler": (BEAT, "celery/apps/beat.py"),
    "worker_cancel_long_running_tasks_on_connection_loss": (
        WORKER,
        "celery/worker/consumer/consumer.py",
    ),
    "worker_deduplicate_successful_tasks": (WORKER, "celery/app/trace.py"),
    "worker_disable_prefetch": (WORKER, "celery/worker/consumer/tasks.py"),
    "worker_eta_task_limit": (WORKER, "celery/worker/consumer/tasks.py"),
    "worker_hijack_root_logger": (WORKER, "celery/app/log.py"),
}
PREFIX_READERS = {"worker_": (WORKER, "celery/worker/worker.py"), "beat_": (BEAT, "celery/beat.py")}


SNIPPET_SUFFIXES = {".py", ".env", ".conf", ".yaml", ".yml", ".service", ".toml"}


def celery_settings() -> dict:
    """Every setting of the installed Celery: name -> celery.app.defaults.Option."""
    from celery.app.defaults import NAMESPACES, flatten

    return dict(flatten(NAMESPACES))


def effective_defaults() -> dict[str, tuple[object, str]]:
    """Settings whose default value means "look elsewhere": the value that applies, and where."""
    from importlib.util import find_spec

    from celery import beat

    # django_celery_beat.schedulers needs configured Django settings to import: read its source.
    source = Path(find_spec("django_celery_beat").origin).with_name("schedulers.py").read_text()
    database_interval = re.search(r"^DEFAULT_MAX_INTERVAL = (\d+)", source, re.M)[1]
    return {
        "beat_max_loop_interval": (
            beat.DEFAULT_MAX_INTERVAL,
            "0 means the scheduler's own `max_interval`: `celery.beat.DEFAULT_MAX_INTERVAL` "
            f"({beat.DEFAULT_MAX_INTERVAL} s) for Celery's schedulers, "
            f"{database_interval} s for django-celery-beat's "
            "`DatabaseScheduler`",
        ),
        "task_reject_on_worker_lost": (False, "`None` is off: the lost task is marked failed"),
        "worker_concurrency": (
            None,
            "`None` means `billiard.cpu_count()`, the CPUs of the machine "
            "(`celery/worker/worker.py`)",
        ),
    }


def setting_pattern(name: str) -> re.Pattern:
    """A setting named on a page (in code: `name`, `app.conf.name`, `CELERY_NAME`) or used by a
    snippet (`CELERY_NAME`, `conf.name`, `conf.update(name=`)."""
    return re.compile(
        rf"`(?:app\.conf\.)?{name}(?:\s*=[^`]*)?`|\bCELERY_{name.upper()}\b"
        rf"|conf\.{name}\b|conf\.update\({name}="
    )


def pages_naming(names) -> dict[str, list[tuple[str, str]]]:
    """Setting name -> (docs-relative path, title) of the pages that name it."""
    texts = {
        str(p.relative_to(DOCS)): p.read_text()
        for p in sorted(DOCS.rglob("*.md"))
        if p.parent != DOCS / "reference"
    }
    titles = {rel: page_title(DOCS / rel) for rel in texts}
    return {
        name: [
            (rel, titles[rel]) for rel, text in texts.items() if setting_pattern(name).search(text)
        ]
        for name in names
    }


def page_title(path: Path) -> str:
    meta, body = front_matter(path)
    heading = re.search(r"^# (.+)$", body, re.MULTILINE)
    return meta.get("title") or (heading[1] if heading else path.stem)


def snippets_naming(name: str) -> list[str]:
    return [
        str(p.relative_to(DOCS.parent))
        for p in sorted(SNIPPETS.rglob("*"))
        if p.is_file()
        and p.suffix in SNIPPET_SUFFIXES
        and mentions(name, text := p.read_text(errors="replace"), set(re.findall(r"\w+", text)))
    ]


def mentions(name: str, text: str, words: set[str]) -> bool:
    """`name` used as a setting in `text` (whose words are `words`: a cheap filter first)."""
    if name not in words and f"CELERY_{name.upper()}" not in words:
        return False
    return bool(setting_pattern(name).search(text))


def site_settings() -> list[str]:
    """Every Celery setting a page discusses or a snippet uses."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if p.parent != DOCS / "reference"]
    corpus = "\n".join(p.read_text() for p in pages)
    corpus += "\n".join(
        p.read_text(errors="replace")
        for p in sorted(SNIPPETS.rglob("*"))
        if p.is_file() and p.suffix in SNIPPET_SUFFIXES
    )
    words = set(re.findall(r"\w+", corpus))
    return sorted(name for name in celery_settings() if mentions(name, corpus, words))


def readers(name: str) -> tuple[str, str]:
    if name in READERS:
        return READERS[name]
    for prefix, reader in PREFIX_READERS.items():
        if name.startswith(prefix):
            return reader
    raise LookupError(f"say who reads {name} in READERS (docs/hooks/site.py)")


def show_default(value: object) -> str:
    if hasattr(value, "total_seconds"):
        return f"`{value!r}` ({value.total_seconds():g} s)"
    return f"`{value!r}`"


def settings_reference(page_dir: str) -> str:
    """The table of docs/reference/settings.md, from the installed Celery."""
    from celery import __version__

    options, effective = celery_settings(), effective_defaults()
    prefix = "../" * len(Path(page_dir).parts) if page_dir else ""
    names = site_settings()
    named = pages_naming(names)
    rows = []
    for name in names:
        reader, module = readers(name)
        default = show_default(options[name].default)
        if name in effective:
            default += f"; {effective[name][1]}"
        links = ", ".join(f"[{title}]({prefix}{rel})" for rel, title in named[name])
        links = links or ", ".join(f"`{path}`" for path in snippets_naming(name))
        rows.append(
            f"| `{name}` | `CELERY_{name.upper()}` | {default} | {reader} (`{module}`) | {links} |"
        )
    head = (
        f"Defaults read from `celery.app.defaults` of Celery {__version__}, the version this "
        f"site was built with.\n\n"
        "| Setting | Django setting | Default | Read by (where in Celery) | Discussed on |\n"
        "|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows)


def transport_defaults() -> dict[str, object]:
    """Defaults of the kombu transport options pages discuss (Redis transport)."""
    from kombu.transport.redis import Channel

    return {
        name: getattr(Channel, name)
        for name in ("visibility_timeout", "unacked_restore_interval", "unacked_restore_throttle")
    }


def default_value(name: str) -> object:
    """A Celery setting's default (or a kombu Redis transport option's), installed version."""
    options = celery_settings()
    if name in options:
        return options[name].default
    return transport_defaults()[name]


def inline_default(name: str) -> str:
    value = default_value(name)
    if hasattr(value, "total_seconds"):
        seconds = value.total_seconds()
        days = (
            f" ({seconds / 86400:g} day{'s' if seconds != 86400 else ''})"
            if seconds >= 86400
            else ""
        )
        return f"{seconds:g} s{days}"
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and name.endswith(("timeout", "interval", "expires", "_limit"))
    ):
        return f"{value:g} s"
    return f"`{value!r}`"


DEFAULT = re.compile(r"<!-- default: (?P<name>[a-z_]+) -->")
VERSION = re.compile(r"<!-- version: (?P<name>[\w-]+) -->")


def expand_generated(markdown: str, page_dir: str) -> str:
    """Every placeholder a page may hold but the one that needs the build's page list."""
    markdown = expand_figures(markdown, page_dir)
    markdown = DEFAULT.sub(lambda m: inline_default(m["name"]), markdown)
    markdown = VERSION.sub(lambda m: package_version(m["name"]), markdown)
    if "<!-- settings-reference -->" in markdown:
        markdown = markdown.replace("<!-- settings-reference -->", settings_reference(page_dir))
    return markdown


H2 = re.compile(r"^## (?P<title>.+?)\s*$", re.MULTILINE)
BACKTICKED = re.compile(r"`([^`]+)`")


def error_entries(docs_dir: Path) -> list[tuple[str, str, str, str, list[str]]]:
    """(page path under docs/, page title, entry title, anchor, backticked strings) of every
    entry (H2) of the troubleshooting pages, in page order."""
    import markdown as md_lib

    found = []
    for path in sorted((docs_dir / "troubleshooting").glob("*.md")):
        if path.name == "index.md":
            continue
        _, body = front_matter(path)
        body = re.sub(r"^```.*?^```", "", body, flags=re.MULTILINE | re.DOTALL)  # no code
        md = md_lib.Markdown(extensions=["toc"])
        md.convert(body)  # the anchors the page gets, duplicates numbered as on the page
        anchors = [t["id"] for t in flat_toc(md.toc_tokens) if t["level"] == 2]
        titles = H2.findall(body)
        assert len(anchors) == len(titles), f"{path}: H2 headings {titles} vs toc {anchors}"
        for title, anchor in zip(titles, anchors, strict=True):
            strings = BACKTICKED.findall(title)
            heading = re.search(r"^# (.+)$", body, re.MULTILINE)
            page = heading[1] if heading else path.stem
            found.append((f"troubleshooting/{path.name}", page, title, anchor, strings))
    return found


def flat_toc(tokens: list[dict]) -> list[dict]:
    return [t for token in tokens for t in (token, *flat_toc(token["children"]))]


def error_index(docs_dir: Path, page_dir: str) -> str:
    """The table of docs/reference/errors.md: one row per error string, A-Z."""
    prefix = "../" * len(Path(page_dir).parts) if page_dir else ""
    rows = []
    for rel, page, title, anchor, strings in error_entries(docs_dir):
        for text in strings:
            entry = BACKTICKED.sub(r"\1", title).replace("|", "\\|")
            link = f"{prefix}{rel}"
            rows.append(
                (text.lower(), f"| `{text}` | [{entry}]({link}#{anchor}) | [{page}]({link}) |")
            )
    head = "| Message | Entry | Page |\n|---|---|---|\n"
    return head + "\n".join(row for _, row in sorted(rows))


def on_page_markdown(markdown: str, page, config, files) -> str:
    page_dir = str(Path(page.file.src_uri).parent).strip(".")
    markdown = expand_generated(markdown, page_dir)
    if "<!-- tested-versions -->" in markdown:
        markdown = markdown.replace("<!-- tested-versions -->", versions_table())
    if "<!-- error-index -->" in markdown:
        markdown = markdown.replace(
            "<!-- error-index -->", error_index(Path(config["docs_dir"]), page_dir)
        )
    if "<!-- patterns-a-z -->" in markdown:
        markdown = markdown.replace(
            "<!-- patterns-a-z -->", patterns_index(Path(config["docs_dir"]), page_dir)
        )
    return markdown


def on_post_build(config) -> None:
    docs_dir, site_url = Path(config["docs_dir"]), config["site_url"] or "/"
    lines = [f"# {config['site_name']}", "", f"> {config['site_description']}", ""]
    lines += ["## Start here", ""]
    for name, url in (
        ("Landing page and decision tree", ""),
        ("Checklist", "checklist/"),
        ("Onboarding path", "onboarding/"),
        ("Audit your project (manage.py celery_audit)", "production/audit/"),
    ):
        lines.append(f"- [{name}]({site_url}{url})")
    lines += ["", "## Patterns", ""]
    for title, section, url, description in pattern_pages(docs_dir):
        lines.append(
            f"- [{title}]({site_url}{url.removesuffix('.md')}/) ({section}): {description}"
        )
    Path(config["site_dir"], "llms.txt").write_text("\n".join(lines) + "\n")
