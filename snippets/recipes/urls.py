"""URLs of the recipes: include them in the project's urlpatterns."""

# --8<-- [start:urls]
from django.urls import path

from snippets.recipes.csv_import import import_progress

urlpatterns = [
    path("imports/<int:job_id>/progress", import_progress, name="import-progress"),
]
# --8<-- [end:urls]
