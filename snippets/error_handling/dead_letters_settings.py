"""Dead letters: the settings of a project with a dead-lettered queue, over its base settings.

A full Django settings module (the proof's worker is configured from it); the page shows the
queue lines.
"""

# ruff: noqa: I001  (the page section below carries its own imports)
from snippets.project.settings import *  # noqa: F403

# --8<-- [start:settings]
from kombu import Exchange, Queue

CELERY_TASK_QUEUES = [
    Queue("celery"),  # (1)!
    Queue(
        "imports",
        Exchange("imports", type="direct"),
        routing_key="imports",
        queue_arguments={  # (2)!
            "x-dead-letter-exchange": "dead-letters",
            "x-dead-letter-routing-key": "imports.dead",
        },
    ),
]  # (3)!
CELERY_TASK_ROUTES = {"snippets.error_handling.dead_letters.import_row": {"queue": "imports"}}
# --8<-- [end:settings]
