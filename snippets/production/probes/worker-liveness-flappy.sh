#!/bin/sh
# --8<-- [start:probe]
# ANTI-PATTERN: the default --timeout of 1 s. A pause of a second or two (GC, a busy
# broker, a CPU-starved node) fails the probe, and the kubelet kills a healthy worker.
exec celery -A snippets.project inspect ping --destination "celery@${HOSTNAME}"
# --8<-- [end:probe]
