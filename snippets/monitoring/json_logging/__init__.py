"""A Django project whose worker logs JSON through Django's LOGGING (docs/monitoring/logging.md).

Kept out of the section's auto-import: connecting `setup_logging` changes logging for the whole
process, so only a worker started with `-A snippets.monitoring.json_logging.celery` gets it.
"""
