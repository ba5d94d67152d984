#!/bin/sh
# --8<-- [start:probe]
# Readiness: the worker finished starting and has not begun shutting down.
test -f "${CELERY_READY_FILE:-/tmp/celery-ready}"
# --8<-- [end:probe]
