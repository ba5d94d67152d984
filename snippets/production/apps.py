from snippets.project import apps


class ProductionConfig(apps.SnippetsAppConfig):
    name = "snippets.production"
    label = "production"
