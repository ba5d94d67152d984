#!/bin/sh
# --8<-- [start:probe]
# Liveness: this pod's worker answers a remote-control ping. --timeout 10, not the default
# 1 s, which fails (and restarts the pod) whenever the broker or the worker is briefly slow.
exec celery -A snippets.project inspect ping --destination "celery@${HOSTNAME}" --timeout 10
# --8<-- [end:probe]
