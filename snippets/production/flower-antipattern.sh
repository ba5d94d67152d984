#!/bin/sh
# --8<-- [start:flower]
# ANTI-PATTERN: the password on the command line (and Flower on every interface).
celery -A snippets.project flower --port=5555 --basic-auth=admin:s3cret-on-the-command-line
# --8<-- [end:flower]
