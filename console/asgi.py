"""ASGI entry point: Django over HTTP (REST, SSE, pages); websockets join in the console issue."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
application = get_asgi_application()
