# Every benchmark of the site in one run (tests/**/bench_*.py: PostgreSQL, Redis and RabbitMQ);
# rewrites docs/assets/data/bench-results.txt, which docs/proof.md shows.
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/snippets
export CELERY_BROKER_URL=redis://127.0.0.1:6379/0 CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/1
export SNIPPETS_REDIS_URL=redis://127.0.0.1:6379/2
export SNIPPETS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672// SNIPPETS_REQUIRE_SERVICES=1
python3 -m nox -s bench
