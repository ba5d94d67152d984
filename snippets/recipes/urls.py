"""URLs of the recipes: include them in the project's urlpatterns."""

# --8<-- [start:urls]
from django.urls import path

from snippets.recipes.csv_import import import_progress
from snippets.recipes.order_workflow import payment_webhook

urlpatterns = [
    path("imports/<int:job_id>/progress", import_progress, name="import-progress"),
    path("payments/webhook", payment_webhook, name="payment-webhook"),
]
# --8<-- [end:urls]
