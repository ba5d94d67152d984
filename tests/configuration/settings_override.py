"""Django settings for worker subprocesses of the Configuration tests.

A real settings module (``SNIPPETS_BASE_SETTINGS``, default the project's) plus the overrides
in ``SNIPPETS_SETTINGS_OVERRIDES`` (JSON): how a deployment layers ``production.py`` over
``base.py``, with the short timeouts a test needs instead of production's hours.
"""

import json
import os
from importlib import import_module

_base = import_module(os.environ.get("SNIPPETS_BASE_SETTINGS", "snippets.project.settings"))
globals().update({k: v for k, v in vars(_base).items() if k.isupper()})
globals().update(json.loads(os.environ.get("SNIPPETS_SETTINGS_OVERRIDES", "{}")))
