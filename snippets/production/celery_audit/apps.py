from django.apps import AppConfig


class CeleryAuditConfig(AppConfig):
    """Registers the system check; the app works under any dotted path it is copied to."""

    name = __name__.rpartition(".")[0]
    label = "celery_audit"

    def ready(self) -> None:
        from . import system_check  # noqa: F401  (registers the check on import)
