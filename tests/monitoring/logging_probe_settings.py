"""The page's JSON settings, with LOGGING's one handler built by a factory that says so on
stderr: how many times, and when, a worker applies LOGGING (tests/monitoring/test_logging.py)."""

import logging
import sys

from snippets.monitoring.json_logging.settings import *  # noqa: F403
from snippets.monitoring.json_logging.settings import LOGGING as PAGE_LOGGING

BUILT = "LOGGING applied: its stderr handler built"


def announced_stream_handler() -> logging.Handler:
    """The page's handler (a StreamHandler on stderr), announced before it is used."""
    print(BUILT, file=sys.stderr, flush=True)
    return logging.StreamHandler()


LOGGING = {
    **PAGE_LOGGING,
    "handlers": {"stderr": {"()": announced_stream_handler, "formatter": "json"}},
}
