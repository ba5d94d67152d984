"""Fixtures of the production section: run the commands the config files hold.

* ``run_command`` - start a command line taken from a unit, a conf file or a script (with
  ``celery`` replaced by the coverage-measured ``python -m tests.covered_celery``), in its own
  process group; the group is stopped after the test. Helpers: ``tests/production/helpers.py``.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack

import pytest

from tests.harness.celery import worker_env
from tests.harness.process import Process


@pytest.fixture
def run_command(tmp_path) -> Iterator[Callable[..., Process]]:
    """Factory: start `argv` (cwd: the repo) in a new session, logging to a file.

    `env` is what the command changes in the test environment (see `prod_env`).
    """
    with ExitStack() as stack:

        def start(argv: list[str], env: Mapping[str, str | None] | None = None) -> Process:
            log_path = tmp_path / f"cmd-{uuid.uuid4().hex[:8]}.log"
            cmd = Process.spawn(argv, log_path=log_path, env=worker_env(**(env or {})))
            stack.callback(cmd.stop, signal.SIGTERM, timeout=20, group=True)
            return cmd

        yield start
