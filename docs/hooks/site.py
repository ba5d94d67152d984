"""Build-time hooks: facts on the site are generated, never typed.

* ``<!-- tested-versions -->`` becomes a table of the versions this build ran with (Python
  packages from the environment, services from their own version commands).
* ``<!-- patterns-a-z -->`` becomes the A-Z index of pattern pages (every page of a section,
  with its front-matter description).
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


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- tested-versions -->" in markdown:
        markdown = markdown.replace("<!-- tested-versions -->", versions_table())
    if "<!-- patterns-a-z -->" in markdown:
        page_dir = str(Path(page.file.src_uri).parent).strip(".")
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
