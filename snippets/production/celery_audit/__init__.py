"""celery_audit: a Django app that audits a project's Celery app against this site's checklist.

Copy this directory into your project (or install it from this repository), add
``"celery_audit"`` to INSTALLED_APPS and run ``python manage.py celery_audit``.
"""
