"""URL configuration: the REST API under /api, SSE beside it, the admin, the web console at /."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.static import serve
from ninja import NinjaAPI

from console import rest_agents
from tasks_app import rest, rest_backend, sse

api = NinjaAPI(title="Agent Task Console API", version="1", auth=rest.ApiKeyAuth(), urls_namespace="api")
rest.install_error_handlers(api)
api.add_router("/v1/agents", rest_agents.router)
api.add_router("", rest.router)
api.add_router("", rest_backend.router)


@csrf_exempt  # API clients send no CSRF token; an unknown route is a JSON 404, never an HTML 403
def api_not_found(request: HttpRequest, rest_of_path: str = "") -> JsonResponse:
    return JsonResponse({"detail": f"No API route {request.method} {request.path}"}, status=404)


urlpatterns = [
    path("api/agent-execution/<str:task_id>/events", sse.task_events, name="task-events"),
    path("api/", api.urls),
    re_path(r"^api/(?P<rest_of_path>.*)$", api_not_found),
    re_path(r"^media/(?P<path>tasks/.+)$", serve, {"document_root": settings.MEDIA_ROOT}),
    re_path(r"^static/(?P<path>.+)$", serve, {"document_root": settings.BASE_DIR / "static"}),
    path("admin/", admin.site.urls),
    path("", include("console.web.urls")),
]
