#!/bin/sh
# One worker per kind of workload; each line is a separate service (unit, container, Deployment).
# --8<-- [start:workers]
celery -A snippets.project worker --queues=fast --concurrency=4 --hostname=fast@%h --loglevel=INFO
celery -A snippets.project worker --queues=slow --concurrency=2 --hostname=slow@%h --loglevel=INFO
# --8<-- [end:workers]
