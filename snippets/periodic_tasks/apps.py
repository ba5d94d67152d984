from snippets.project import apps


class PeriodicTasksConfig(apps.SnippetsAppConfig):
    name = "snippets.periodic_tasks"
    label = "periodic_tasks"
