from snippets.project import apps


class DjangoIntegrationConfig(apps.SnippetsAppConfig):
    name = "snippets.django_integration"
    label = "django_integration"
    # The testing page's module holds a reader's pytest tests, no task: a worker or a `celery`
    # command need not import pytest (~0.5 s of CPU at every start, measured with -X importtime).
    entry_modules = frozenset({"testing"})
