from snippets.project import apps


class DjangoIntegrationConfig(apps.SnippetsAppConfig):
    name = "snippets.django_integration"
    label = "django_integration"
