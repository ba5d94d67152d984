"""A private Celery app on Redis with a short visibility timeout, for `celery -A` in a test.

VISIBILITY_TIMEOUT (seconds) comes from the environment. kombu 5.7's Redis transport sweeps
unacknowledged messages back to the queue only every unacked_restore_interval seconds, and
scans only on every unacked_restore_throttle-th sweep (defaults 10 and 10: about 100 s); both
are set to 1 here so a redelivery shows within seconds (kombu/transport/redis.py).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippets.project.settings")
django.setup()

from celery import Celery  # noqa: E402

import snippets.task_design.calling  # noqa: E402, F401  registers send_reminder (shared_task)


def make_app(redis_url: str, visibility_timeout: int, keyprefix: str = "") -> Celery:
    """keyprefix: the unacked index is one per Redis database (and key prefix), swept with the
    sweeping worker's own timeout; two workers with different timeouts need separate ones."""
    app = Celery("redis_visibility", set_as_current=False)  # never the pytest process's app
    options = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "global_keyprefix": keyprefix,
    }
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        broker_transport_options=options,
        result_backend_transport_options=options,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app(
    os.environ.get("SNIPPETS_REDIS_URL", "redis://127.0.0.1:6379/15"),
    int(os.environ.get("VISIBILITY_TIMEOUT", "3600")),
    os.environ.get("KEYPREFIX", ""),
)
