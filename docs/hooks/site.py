"""Build-time hooks: facts on the site are generated, never typed.

* ``<!-- tested-versions -->`` becomes a table of the versions this build ran with (Python
  packages from the environment, services from their own version commands).
* ``<!-- patterns-a-z -->`` becomes the A-Z index of pattern pages (every page of a section,
  with its front-matter description).
* ``<!-- bench: NAME -->`` becomes the row ``NAME`` of ``assets/data/bench-results.txt`` (the
  file ``nox -s bench`` writes) as a one-row table with its stamp; ``<!-- bench: NAME | COLUMN -->``
  becomes one cell of it (``ratio``, ``baseline result``, ...). ``<!-- chaos: SCENARIO / VARIANT /
  BROKER -->`` does the same with ``chaos-results.txt`` (``nox -s chaos``). A name that matches
  no row fails the build: a measured figure is never typed on a page.
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
}
FIGURE = re.compile(r"<!-- (?P<kind>bench|chaos): (?P<name>[^|>]+?)(?: \| (?P<column>[^>]+?))? -->")


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


def expand_generated(markdown: str, page_dir: str) -> str:
    """Every placeholder a page may hold but the two that need the build's page list."""
    return expand_figures(markdown, page_dir)


def on_page_markdown(markdown: str, page, config, files) -> str:
    page_dir = str(Path(page.file.src_uri).parent).strip(".")
    markdown = expand_generated(markdown, page_dir)
    if "<!-- tested-versions -->" in markdown:
        markdown = markdown.replace("<!-- tested-versions -->", versions_table())
    if "<!-- patterns-a-z -->" in markdown:
        markdown = markdown.replace(
            "<!-- patterns-a-z -->", patterns_index(Path(config["docs_dir"]), page_dir)
        )
    return markdown


def on_post_build(config) -> None:
    docs_dir, site_url = Path(config["docs_dir"]), config["site_url"] or "/"
    lines = [f"# {config['site_name']}", "", f"> {config['site_description']}", ""]
    lines += ["## Start here", ""]
    for name, url in (("Landing page and decision tree", ""), ("Checklist", "checklist/"),
                      ("Onboarding path", "onboarding/")):  # fmt: skip
        lines.append(f"- [{name}]({site_url}{url})")
    lines += ["", "## Patterns", ""]
    for title, section, url, description in pattern_pages(docs_dir):
        lines.append(
            f"- [{title}]({site_url}{url.removesuffix('.md')}/) ({section}): {description}"
        )
    Path(config["site_dir"], "llms.txt").write_text("\n".join(lines) + "\n")
