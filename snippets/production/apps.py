from snippets.project import apps


class ProductionConfig(apps.SnippetsAppConfig):
    name = "snippets.production"
    label = "production"
    # A second DJANGO_SETTINGS_MODULE (it needs CELERY_BROKER_URL) and a WSGI entry point.
    entry_modules = frozenset({"settings", "wsgi"})
