#!/bin/sh
# Flower for the snippets project. Run from the project root, next to the worker's settings.
# --8<-- [start:run]
# The password comes from the environment (FLOWER_BASIC_AUTH=user:password, comma-separated
# for several users), never from argv: every local user can read argv with `ps`.
: "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH=user:password}"
export FLOWER_BASIC_AUTH
celery -A snippets.project flower \
  --address=127.0.0.1 \
  --port="${FLOWER_PORT:-5555}" \
  --max_tasks=10000 \
  --purge_offline_workers=600 \
  "$@"
# --8<-- [end:run]
