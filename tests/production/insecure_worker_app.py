"""`celery -A tests.production.insecure_worker_app worker`: the page's anti-pattern app, on
the test broker, for the proof that accepting pickle runs the sender's code."""

import os

from snippets.production.security import insecure_app

app = insecure_app(os.environ["CELERY_BROKER_URL"])
