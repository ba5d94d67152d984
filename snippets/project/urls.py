"""URLs of the snippets project; sections add their views here."""

from django.urls import URLPattern, URLResolver, path

from snippets.django_integration.request_correlation import start_pipeline

urlpatterns: list[URLPattern | URLResolver] = [
    path("django-integration/pipeline/", start_pipeline, name="start-pipeline"),
]
