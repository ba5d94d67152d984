from snippets.project import apps


class ErrorHandlingConfig(apps.SnippetsAppConfig):
    name = "snippets.error_handling"
    label = "error_handling"
