from snippets.project import apps


class MonitoringConfig(apps.SnippetsAppConfig):
    name = "snippets.monitoring"
    label = "monitoring"
