"""Settings for a `celery beat` subprocess started by a test: the project's settings, plus
the beat schedule the test passes as JSON in PERIODIC_TEST_SCHEDULE
(``{entry: {"task", "seconds", "args", "kwargs", "options"}}``; ``seconds`` is the interval).
"""

import json
import os
from datetime import timedelta

from snippets.project.settings import *  # noqa: F403

CELERY_BEAT_SCHEDULE = {
    name: {
        **{key: value for key, value in entry.items() if key != "seconds"},
        "schedule": timedelta(seconds=entry["seconds"]),
    }
    for name, entry in json.loads(os.environ.get("PERIODIC_TEST_SCHEDULE", "{}")).items()
}
