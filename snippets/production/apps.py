import pkgutil
from importlib import import_module

from snippets.project import apps


class ProductionConfig(apps.SnippetsAppConfig):
    name = "snippets.production"
    label = "production"

    def ready(self) -> None:
        """Import the page modules; not ``settings`` and ``wsgi``, entry points of their own."""
        for module in pkgutil.iter_modules(self.module.__path__):
            if module.name not in {"apps", "migrations", "settings", "wsgi"}:
                import_module(f"{self.name}.{module.name}")
