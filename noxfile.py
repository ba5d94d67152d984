"""Sessions: serve, docs, tests (matrix), doctests, lint — see README.md."""

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "docs", "doctests"]
nox.options.reuse_existing_virtualenvs = True

# Django 5.2 LTS on Python 3.11 and Django 6.1 on Python 3.12: uv.lock resolves one per Python.
PYTHONS = ["3.11", "3.12"]
DOCS_ENV = {"NO_MKDOCS_2_WARNING": "1"}


def sync(session: nox.Session, *groups: str) -> None:
    """Install exactly the locked versions of the given dependency groups."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *(f"--group={g}" for g in groups),
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The behaviour tests on a real worker: embedded by default, real services from the env.

    CELERY_BROKER_URL / CELERY_RESULT_BACKEND / DATABASE_URL pick the services; with
    SNIPPETS_REQUIRE_SERVICES=1 a missing service fails the run and coverage of snippets/
    must be 100 %.
    """
    sync(session, "test", "docs")  # docs: the contract test builds the site
    strict = os.environ.get("SNIPPETS_REQUIRE_SERVICES") == "1"
    if os.environ.get("SNIPPETS_COVERAGE") == "0":
        # .ci/run measures coverage in one of its two runs (the 100 % gate holds there): under
        # coverage every worker and pool child of the other run cost ~40 % more CPU (measured on
        # Python 3.11, its C tracer: tests/error_handling/test_worker_loss.py 33 -> 20 CPU-s).
        args = [arg for arg in session.posargs if arg != "--cov-append"]
        session.run("pytest", "-p", "no:cov", *args)
        return
    if "--cov-append" not in session.posargs:  # .ci/run's re-run of a flaky test adds to the data
        session.run("coverage", "erase")
    # Python 3.12+ measures through sys.monitoring (PEP 669): the worker subprocesses inherit it
    # and spend ~20 % less CPU than under the C tracer (closing note of #18); 3.11 has no
    # sys.monitoring, coverage's default core then.
    core = {"COVERAGE_CORE": "sysmon"} if _version(session.python) >= (3, 12) else {}
    session.run(
        "pytest",
        "--cov",
        "--cov-report=term-missing:skip-covered",
        *(["--cov-fail-under=100"] if strict else []),
        *session.posargs,
        env=core,
    )


def _version(python: object) -> tuple[int, ...]:
    return tuple(int(part) for part in str(python).split("."))


@nox.session(python="3.11")
def doctests(session: nox.Session) -> None:
    """Run every page's Python as the reader sees it (includes expanded by docs/conftest.py)."""
    sync(session, "doctest")
    session.run(
        "pytest",
        "--markdown-docs",
        "--markdown-docs-syntax=superfences",
        "-p",
        "no:cov",
        "docs",
        *session.posargs,
    )


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the site, failing on any warning (broken link, missing include)."""
    sync(session, "docs")
    session.run("mkdocs", "build", "--strict", env=DOCS_ENV)


@nox.session(python="3.11")
def serve(session: nox.Session) -> None:
    """Serve the site on http://127.0.0.1:8000, reloading when docs/ or snippets/ change."""
    sync(session, "docs")
    session.run("mkdocs", "serve", "--dev-addr", "127.0.0.1:8000", *session.posargs, env=DOCS_ENV)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff: lint and format."""
    sync(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def zensical(session: nox.Session) -> None:
    """Forward compatibility: build the same mkdocs.yml with Zensical and report what differs
    from the MkDocs build (non-blocking: MkDocs 1.x and Material are in maintenance)."""
    sync(session, "docs")
    session.install("zensical")
    reference = f"{session.create_tmp()}/site-mkdocs"
    session.run("mkdocs", "build", "--strict", "--site-dir", reference, env=DOCS_ENV)
    session.run("zensical", "build", "--clean", success_codes=[0, 1, 2])
    session.run("python", "docs/hooks/compare_builds.py", reference, "site")


@nox.session(python="3.11")
def browser(session: nox.Session) -> None:
    """The built site in Debian's Chromium (/usr/bin/chromium): tree, request box, search,
    copy button, palette, mermaid, accessibility (axe-core), landing-page weight; the request
    list's top-5 shares of the search box and the request box go to
    docs/assets/data/search-results.txt (shown on docs/proof.md)."""
    sync(session, "browser")
    session.run("npm", "ci", "--silent", "--prefix", "tests/site/js", external=True)
    env = {"SEARCH_RESULTS": "docs/assets/data/search-results.txt"}
    session.run("pytest", "-m", "browser", "-p", "no:cov", "tests/site", *session.posargs, env=env)


@nox.session(python="3.11")
def search_compare(session: nox.Session) -> None:
    """Pagefind side by side with the site's search: the built site indexed by Pagefind (code
    blocks left out, as for the site's search), the request list of `nox -s browser` sent to
    Pagefind's search API in Debian's Chromium; its top-5 share is written beside the site's
    in docs/assets/data/search-results.txt (docs/versions.md records the choice)."""
    sync(session, "browser")
    session.install("pagefind[bin]==1.5.2")
    site = f"{session.create_tmp()}/site"
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env=DOCS_ENV)
    session.run(
        "python",
        "-m",
        "pagefind",
        "--site",
        site,
        "--root-selector",
        "article.md-content__inner",
        "--exclude-selectors",
        ".highlight",
        "--exclude-selectors",
        "pre.mermaid",
    )
    env = {"SEARCH_RESULTS": "docs/assets/data/search-results.txt"}
    session.run("python", "-m", "tests.site.pagefind_compare", site, env=env)


@nox.session(python="3.11")
def diagrams(session: nox.Session) -> None:
    """Redraw docs/assets/decision-tree.svg from decision-tree.mmd with the site's mermaid."""
    sync(session, "browser")
    session.run("python", "docs/hooks/render_diagrams.py")


@nox.session(python="3.11")
def skill(session: nox.Session) -> None:
    """Build dist/skill (SKILL.md + references/<category>.md) from the site's pages."""
    sync(session, "docs")
    session.run("python", "docs/hooks/skill.py", "dist/skill")


@nox.session(python="3.11")
def chaos(session: nox.Session) -> None:
    """The chaos scenarios at full load (CHAOS_TASKS, default 1000) on the configured broker;
    writes the figures to docs/assets/data/chaos-results.txt (shown on docs/proof.md)."""
    sync(session, "test")
    env = {
        "CHAOS_TASKS": os.environ.get("CHAOS_TASKS", "1000"),
        "CHAOS_RESULTS": "docs/assets/data/chaos-results.txt",
        # The published figures come from workers started as the reader starts them, without
        # the fork server (tests/harness/forkserver.py), which only saves CI time.
        "SNIPPETS_FORK_SERVER": "0",
    }
    # A scenario at 1,000 tasks runs for minutes: no per-test timeout of the normal suite.
    session.run(
        "pytest", "-p", "no:cov", "--timeout=1800", "tests/proof", *session.posargs, env=env
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Every benchmark of the site (tests/**/bench_*.py), each a ratio of variants run at least 5
    times, alternating, in one session (median and min-max spread, tests/bench.py): CSV import
    naive vs the recipe's ORM and COPY loaders vs a bare COPY, one task per item vs batches, a
    short task's wait behind a long one by prefetch setting, tiny-task throughput on Redis and
    RabbitMQ at Celery's defaults vs tuned. Prints the table and writes it to
    docs/assets/data/bench-results.txt (shown on docs/proof.md). Needs PostgreSQL, Redis,
    RabbitMQ and a network broker in the environment, as for the services tests; BENCH_SCALE
    (default 1) scales every workload."""
    sync(session, "test")
    benches = sorted(str(p) for p in __import__("pathlib").Path("tests").rglob("bench_*.py"))
    env = {"BENCH_RESULTS": "docs/assets/data/bench-results.txt", "SNIPPETS_FORK_SERVER": "0"}
    session.run("pytest", "-p", "no:cov", "-s", *benches, *session.posargs, env=env)


@nox.session(python="3.12")
def mutants(session: nox.Session) -> None:
    """Mutation testing of the pattern pages (tests/mutants.py, issue #22): every mutant of the
    pattern sections a page includes (task options, settings, the pattern's logic), run in place
    against the page's own test module on the services the environment names (as for the
    services tests), -x, with a deadline. `nox -s mutants -- task-design/idempotency` runs one
    page (no argument: every pattern page; `-- --list PAGE` prints the mutants). Writes
    docs/assets/data/mutants-results.txt (shown on docs/proof.md and each page's Proof section)
    and docs/assets/data/mutants/<section>/<page>.json; equivalent mutants and their reasons are
    in tests/mutants_equivalent.toml. Not part of .ci/run: hours for every page on 2 cores."""
    sync(session, "test")
    session.run("python", "-m", "tests.mutants", *session.posargs)
