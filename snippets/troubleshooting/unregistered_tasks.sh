#!/bin/sh
# Which task names does a running worker know? (docs/troubleshooting/unregistered-tasks.md)
# --8<-- [start:confirm]
# -d: the worker's node name (the "ready." line of its log); without -d, every worker answers.
celery -A snippets.project inspect registered -d "$WORKER" --timeout 5
# --8<-- [end:confirm]
