"""Websocket routes of the console, behind the session and the Origin check."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from console.web.consumers import TaskEventsConsumer, TaskListConsumer

websocket_urlpatterns = [
    path("ws/tasks/", TaskListConsumer.as_asgi()),
    path("ws/tasks/<str:task_id>/", TaskEventsConsumer.as_asgi()),
]

# Origin first (allowed hosts only), then the session's user, then the route.
websocket_application = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
