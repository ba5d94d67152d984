"""Settings for a `celery beat` subprocess started by a test: the settings module celery.env
names (the units' EnvironmentFile: the production settings), plus
the beat schedule the test passes as JSON in PERIODIC_TEST_SCHEDULE
(``{entry: {"task", "seconds", "args", "kwargs", "options"}}``; ``seconds`` is the interval),
and the scheduler class named in PERIODIC_TEST_SCHEDULER, as a project's settings would.
PERIODIC_TEST_SETTINGS_BLOCK names a block a page shows as settings (``path:section``, as the
page includes it): its text is run here, as if the reader had pasted it into settings.py.
PERIODIC_TEST_BASE_SETTINGS names other base settings (those of the site's container image).
"""

import importlib
import json
import os
import re
from datetime import timedelta
from pathlib import Path

from snippets.project.settings import *  # noqa: F403
from tests.harness.deployment import read_env_file

base = os.environ.get("PERIODIC_TEST_BASE_SETTINGS") or read_env_file()["DJANGO_SETTINGS_MODULE"]
globals().update({k: v for k, v in vars(importlib.import_module(base)).items() if k.isupper()})

CELERY_BEAT_SCHEDULE = {
    name: {
        **{key: value for key, value in entry.items() if key != "seconds"},
        "schedule": timedelta(seconds=entry["seconds"]),
    }
    for name, entry in json.loads(os.environ.get("PERIODIC_TEST_SCHEDULE", "{}")).items()
}

if os.environ.get("PERIODIC_TEST_SCHEDULER"):
    CELERY_BEAT_SCHEDULER = os.environ["PERIODIC_TEST_SCHEDULER"]

if block := os.environ.get("PERIODIC_TEST_SETTINGS_BLOCK"):
    path, section = block.split(":")
    text = (Path(__file__).resolve().parent.parent.parent / path).read_text()
    exec(re.search(rf"\[start:{section}\]\n(.*?)# --8<-- \[end:{section}\]", text, re.S)[1])
