#!/bin/sh
# The stuck-task runbook's commands. Each section runs on its own (tests/monitoring run them).
# --8<-- [start:inspect]
# Which workers answer, and what each one is doing:
celery -A snippets.project inspect active --json      # running now, with time_start and pid
celery -A snippets.project inspect reserved --json    # prefetched, waiting for a free process
celery -A snippets.project inspect scheduled --json   # ETA/countdown tasks held in memory
celery -A snippets.project inspect registered --json  # the task names each worker knows
celery -A snippets.project inspect active_queues --json  # the queues each worker consumes
# --8<-- [end:inspect]

# --8<-- [start:terminate]
# Stop one task: revoke it and send SIGTERM to the process running it. -d names the worker
# that `inspect active` showed running it (the reply then comes as soon as it answers);
# without -d, every worker adds the id to its revoked list.
celery -A snippets.project control terminate SIGTERM "$TASK_ID" -d "$WORKER" --timeout=10 --json
# --8<-- [end:terminate]

# --8<-- [start:purge]
# Delete every message waiting in one queue. Irreversible: the tasks never run.
celery -A snippets.project purge -Q "$QUEUE" -f
# --8<-- [end:purge]
