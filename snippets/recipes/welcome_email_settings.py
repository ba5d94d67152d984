"""Welcome email: the beat schedule of the reconciliation job, over the project's settings.

A full Django settings module (the proof configures an app from it); the page shows the schedule.
"""

from snippets.project.settings import *  # noqa: F403

# --8<-- [start:beat]
CELERY_BEAT_SCHEDULE = {
    "reconcile-welcome-emails": {
        "task": "snippets.recipes.welcome_email.reconcile_welcome_emails",  # (1)!
        "schedule": 300.0,  # every five minutes
    },
}
# --8<-- [end:beat]
