#!/bin/sh
# --8<-- [start:flower]
# FLOWER_BASIC_AUTH=user:password is in the environment (a Secret, an EnvironmentFile):
# an argument would be readable by every local user in `ps` and /proc/<pid>/cmdline.
celery -A snippets.project flower --address=127.0.0.1 --port=5555
# --8<-- [end:flower]
