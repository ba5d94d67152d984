"""Production settings: the project's settings plus what running workers for real needs.

Set ``DJANGO_SETTINGS_MODULE=snippets.production.settings`` in the unit, the image or the
manifest. Each value reads an environment variable first, so one image serves every
deployment (and the tests shorten the timeouts through the same variables).
"""

# --8<-- [start:base]
import os

from snippets.project.settings import *  # noqa: F403  (the base settings, then the overrides)

# Credentials come from the environment (a secret store, an EnvironmentFile, a Secret),
# never from the code or the command line: a missing one fails at startup, loudly.
CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
CELERY_RESULT_BACKEND = os.environ["CELERY_RESULT_BACKEND"]
# --8<-- [end:base]

# --8<-- [start:recycling]
import os

# Replace a pool child after it ran this many tasks, or once its resident memory passed
# this many KiB (checked after each task: the task that crosses the line still finishes).
CELERY_WORKER_MAX_TASKS_PER_CHILD = int(os.environ.get("CELERY_MAX_TASKS_PER_CHILD", "1000"))
CELERY_WORKER_MAX_MEMORY_PER_CHILD = int(os.environ.get("CELERY_MAX_MEMORY_PER_CHILD", "400000"))
# --8<-- [end:recycling]

# --8<-- [start:routes]
# One queue per kind of workload, each with its own worker pool, so a burst of slow
# reports never waits in front of a password-reset email.
CELERY_TASK_ROUTES = {
    "snippets.production.scaling.build_report": {"queue": "slow"},
    "snippets.production.scaling.send_receipt": {"queue": "fast"},
}
# --8<-- [end:routes]

# --8<-- [start:shutdown]
import os

# Celery 5.5+: on SIGTERM (remapped to SIGQUIT by REMAP_SIGTERM=SIGQUIT in the
# environment), let running tasks finish for up to this many seconds, then requeue what
# is still running and exit. Keep it below the supervisor's stop timeout (systemd
# TimeoutStopSec, Kubernetes terminationGracePeriodSeconds) so the exit is never a SIGKILL.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = float(os.environ.get("CELERY_SOFT_SHUTDOWN_TIMEOUT", "50"))
# --8<-- [end:shutdown]

# --8<-- [start:beat]
# Celery 5.7+: beat answers `celery inspect ping -d celerybeat@$HOSTNAME` (liveness probe).
CELERY_BEAT_ENABLE_REMOTE_CONTROL = True
# --8<-- [end:beat]

# --8<-- [start:audit]
# docs/production/audit.md: what `manage.py celery_audit` reads besides the app, and the
# findings this project keeps on purpose, each with its reason ("<check> <object>", globs).
AUDIT_DEPLOYMENT = [
    "snippets/production/systemd/celery-worker.service",
    "snippets/production/systemd/celery-beat.service",
    "snippets/production/systemd/celery.env",
    "snippets/production/compose.yaml",
    "snippets/production/k8s/worker.yaml",
    "snippets/production/k8s/beat.yaml",
    "snippets/production/scaling.sh",
]
AUDIT_ACKNOWLEDGED = {
    "idempotency task:snippets.*": (
        "tests/test_checklist.py: a test kills or redelivers each, or lists it as not yet proved"
    ),
    "idempotency task:billing.tasks.email_invoice": (
        "the renamed task's alias (docs/troubleshooting/unregistered-tasks.md): it calls "
        "send_invoice in-process, which tests/test_checklist.py covers"
    ),
    "poison-loop task:snippets.error_handling.worker_loss.capture_payment_requeue": (
        "the anti-pattern docs/error-handling/worker-loss.md shows looping"
    ),
    "poison-loop task:snippets.task_design.idempotency.credit_account*": (
        "requeue at once is what the idempotency proof needs; the page names the loop"
    ),
}
# --8<-- [end:audit]
