"""`celery -A tests.error_handling.dlx_worker worker`: the project with a dead-lettered queue.

The queue name and broker come from the environment, so each test gets its own queue.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippets.project.settings")
django.setup()

from snippets.error_handling.dead_letters import dead_letter_app  # noqa: E402

app = dead_letter_app(os.environ["CELERY_BROKER_URL"], os.environ["DEAD_LETTER_TEST_QUEUE"])
