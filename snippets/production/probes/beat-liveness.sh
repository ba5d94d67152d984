#!/bin/sh
# --8<-- [start:probe]
# Celery 5.7+ (beat_enable_remote_control): beat answers while its scheduler keeps ticking.
exec celery -A snippets.project inspect ping --destination "celerybeat@${HOSTNAME}" --timeout 10
# --8<-- [end:probe]
