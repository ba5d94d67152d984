from snippets.project import apps


class ConfigurationConfig(apps.SnippetsAppConfig):
    name = "snippets.configuration"
    label = "configuration"
