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
# Stop one task: revoke it and send SIGQUIT to the pool process running it. Not SIGTERM: the
# site's workers run with REMAP_SIGTERM=SIGQUIT, and then every pool process ignores SIGTERM
# while the worker still replies "terminate: <id>" and stores REVOKED. SIGQUIT ends the process
# with SystemExit (finally blocks run). -d names the worker that `inspect active` showed running
# it; without -d, every worker adds the id to its revoked list.
celery -A snippets.project control terminate SIGQUIT "$TASK_ID" -d "$WORKER" --timeout=10 --json
# --8<-- [end:terminate]

# --8<-- [start:verify-gone]
# The reply only says the signal was sent. On the worker's host, check that the process that ran
# it (worker_pid in `inspect active`) is gone; a task that swallows SystemExit, or a C call
# that never returns to Python, survives SIGQUIT: SIGKILL that process (the pool replaces it).
if kill -0 "$WORKER_PID" 2>/dev/null; then kill -KILL "$WORKER_PID"; echo "killed $WORKER_PID"; else echo "gone"; fi
# --8<-- [end:verify-gone]

# --8<-- [start:terminate-sigterm]
# ANTI-PATTERN under REMAP_SIGTERM=SIGQUIT (the site's systemd, Docker and Kubernetes workers):
# the pool process ignores SIGTERM, the task runs on, yet the reply is "terminate: <id>".
celery -A snippets.project control terminate SIGTERM "$TASK_ID" -d "$WORKER" --timeout=10 --json
# --8<-- [end:terminate-sigterm]

# --8<-- [start:purge]
# Delete every message waiting in one queue. Irreversible: the tasks never run.
celery -A snippets.project purge -Q "$QUEUE" -f
# --8<-- [end:purge]
