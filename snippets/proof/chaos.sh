# The full chaos runs (1,000 tasks per kill scenario) on Redis, then on RabbitMQ; each run
# rewrites its broker's rows of docs/assets/data/chaos-results.txt, which docs/proof.md shows.
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/snippets
export CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/1 SNIPPETS_REQUIRE_SERVICES=1
CELERY_BROKER_URL=redis://127.0.0.1:6379/0 python3 -m nox -s chaos
CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// python3 -m nox -s chaos
