"""URL configuration: the REST API under /api, SSE beside it, uploaded files' links, the admin, the web
console at /."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.static import serve

from console import admin_site
from tasks_app import (
    openapi,
    rest,
    rest_agents,
    rest_connections,
    rest_keys,
    rest_platform,
    rest_workers,
    sse,
    uploads,
)

api = openapi.Api(title="Agent Task Console API", version="1", auth=rest.ApiKeyAuth(), urls_namespace="api")
rest.install_error_handlers(api)
api.add_router("/v1/agents", rest_agents.router)
api.add_router("/v1/keys", rest_keys.keys_router)
api.add_router("/v1/audit", rest_keys.audit_router)
api.add_router("/v1/connections", rest_connections.router)
api.add_router("/v1/agents", rest_workers.router)
api.add_router("", rest.router)
api.add_router("", rest_platform.router)


def hot_first(
    urls: tuple[list[Any], str, str], prefix: str = "agent-execution/"
) -> tuple[list[Any], str, str]:
    """ninja's URL patterns with the task routes first: an agent run and an external worker call them
    many times each.

    Django tries patterns in order, and a push used to fail 25 of them (the /v1 console routes, the
    docs) before its own, on every call. Only routes that start with the literal `prefix` move, in
    their own order, so no path matches another pattern than before.
    """
    patterns, app_name, namespace = urls
    hot = [p for p in patterns if str(p.pattern).startswith(prefix)]
    return hot + [p for p in patterns if not str(p.pattern).startswith(prefix)], app_name, namespace


@csrf_exempt  # API clients send no CSRF token; an unknown route is a JSON 404, never an HTML 403
def api_not_found(request: HttpRequest, rest_of_path: str = "") -> JsonResponse:
    return JsonResponse({"detail": f"No API route {request.method} {request.path}"}, status=404)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's own 400 (e.g. a bad Host header, refused before any view): JSON under /api too."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": f"Bad request: {str(exception)[:200]}"}, status=400)
    return defaults.bad_request(request, exception)


handler400 = bad_request

urlpatterns = [
    path("api/agent-execution/<str:task_id>/events", sse.task_events, name="task-events"),
    *rest_workers.urlpatterns,
    path("api/", hot_first(api.urls)),
    re_path(r"^api/(?P<rest_of_path>.*)$", api_not_found),
    path("files/<str:token>/<str:name>", uploads.download, name="upload-file"),
    re_path(r"^static/(?P<path>.+)$", serve, {"document_root": settings.BASE_DIR / "static"}),
    *admin_site.urls(),  # off unless DJANGO_ADMIN=1
    path("", include("console.web.urls")),
]
