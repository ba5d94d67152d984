#!/bin/sh
# --8<-- [start:probe]
# Liveness without the broker: the consumer touched the file less than 60 s ago.
f="${CELERY_LIVENESS_FILE:-/tmp/celery-alive}"
test -f "$f" && test $(($(date +%s) - $(stat -c %Y "$f"))) -lt "${CELERY_LIVENESS_MAX_AGE:-60}"
# --8<-- [end:probe]
