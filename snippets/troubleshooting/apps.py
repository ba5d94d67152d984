from snippets.project import apps


class TroubleshootingConfig(apps.SnippetsAppConfig):
    name = "snippets.troubleshooting"
    label = "troubleshooting"
    # A module no worker imports (docs/troubleshooting/unregistered-tasks.md reproduces what
    # that does): the app must not import it either.
    entry_modules = frozenset({"unregistered_jobs"})
