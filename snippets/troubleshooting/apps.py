from snippets.project import apps


class TroubleshootingConfig(apps.SnippetsAppConfig):
    name = "snippets.troubleshooting"
    label = "troubleshooting"
