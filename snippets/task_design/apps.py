from snippets.project import apps


class TaskDesignConfig(apps.SnippetsAppConfig):
    name = "snippets.task_design"
    label = "task_design"
