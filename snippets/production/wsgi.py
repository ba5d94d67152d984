"""The WSGI entry point of the web container (gunicorn snippets.production.wsgi)."""

# --8<-- [start:wsgi]
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippets.production.settings")
application = get_wsgi_application()
# --8<-- [end:wsgi]
