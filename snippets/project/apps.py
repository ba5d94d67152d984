"""The base AppConfig every section app uses."""

import pkgutil
from importlib import import_module

from django.apps import AppConfig


class SnippetsAppConfig(AppConfig):
    """Import every page module of the section, so each page's tasks register with the app.

    A page module is the section's ``tasks.py``: one pattern per module, one module per page.
    """

    default_auto_field = "django.db.models.BigAutoField"
    #: Modules that are entry points of their own (a settings or wsgi module), not page modules.
    entry_modules: frozenset[str] = frozenset()

    def ready(self) -> None:
        skip = {"apps", "migrations", *self.entry_modules}
        for module in pkgutil.iter_modules(self.module.__path__):
            if not module.name.startswith("_") and module.name not in skip:
                import_module(f"{self.name}.{module.name}")
