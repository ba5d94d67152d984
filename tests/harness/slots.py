"""One test run split over pytest-xdist processes, each on services of its own (.ci/run).

A process's services must be set before pytest-django reads the settings, and execnet's
``--tx popen//env:NAME=value`` cannot carry a URL (``//`` is its separator). So each process
gets a slot name (``--tx popen//env:SNIPPETS_SLOT=b``), ``.ci/run`` exports that slot's
services as ``SNIPPETS_SLOT_b__CELERY_BROKER_URL`` and so on, and this plugin, loaded with
``-p tests.harness.slots`` before any conftest, copies them over the process's variables.
Without ``SNIPPETS_SLOT`` it does nothing.
"""

import os

SLOT = os.environ.get("SNIPPETS_SLOT", "")
if SLOT:
    prefix = f"SNIPPETS_SLOT_{SLOT}__"
    for key, value in list(os.environ.items()):
        if key.startswith(prefix):
            os.environ[key.removeprefix(prefix)] = value
