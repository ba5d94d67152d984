"""Results files the runs write (never typed by hand): a stamp line, then a markdown table.

    Last run: <UTC date>; <machine>; <versions>.

    | header ... |
    |---|...
    | row ... |

`nox -s chaos` writes docs/assets/data/chaos-results.txt and `nox -s bench`
docs/assets/data/bench-results.txt with these; docs/proof.md includes both.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

PACKAGES = ("celery", "kombu", "django", "psycopg")


def stamp(note: str = "") -> str:
    """When, on what machine and with which versions the figures were measured (and `note`)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    return f"Last run: {when}; {machine}; {versions}.{' ' + note if note else ''}"


def table_rows(path: Path) -> list[str]:
    """The table rows of an existing results file (none when there is no file yet)."""
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines()[4:] if line.startswith("|")]


def write_results(path: Path, header: str, rows: list[str], note: str = "") -> None:
    """Write the stamp line, a blank line, the table header (two lines) and the rows.

    Written beside and renamed over the file: a site build reading it at that moment (the
    browser session runs beside the tests in .ci/run) sees the old file or the new, never half.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text("\n".join([stamp(note), "", *header.splitlines(), *rows]) + "\n")
    os.replace(part, path)


def report(
    terminalreporter,
    title: str,
    header: str,
    rows: list[str],
    target: str | None,
    kept: Callable[[str], bool],
    order: Callable[[str], tuple] | None = None,
    note: str = "",
) -> None:
    """Print the rows as a table under `title`; with a `target` file, rewrite it with the rows
    of this run after the existing rows `kept(line)` says to keep (sorted by `order`, if any,
    so that re-running one scenario does not reshuffle the published table)."""
    if not rows:
        return
    terminalreporter.section(title)
    terminalreporter.write_line(header)
    for row in rows:
        terminalreporter.write_line(row)
    if target:
        path = Path(target)
        table = [*filter(kept, table_rows(path)), *rows]
        write_results(path, header, sorted(table, key=order) if order else table, note)
