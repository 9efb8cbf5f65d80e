"""Path normalisation for the xpander-compatible API.

The official SDK calls every route with or without a leading /{organization_id} segment and may
produce `//` when XPANDER_BASE_URL ends with a slash; both map to the same views here. The API is
also mounted at /agent-controller: a base URL whose first path segment is `agent-controller` makes
the SDK put the organization segment on every REST route, as xpander's agent-controller expects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string

API_ROOTS = frozenset(
    {
        "agent-execution",
        "activity",
        "agents",
        "agents-metrics",
        "mcp_auth",
        "metadata",
        "memories",
        "tools",
        "media",
        "v1",
        "docs",
        "openapi.json",
    }
)
_SLASHES = re.compile(r"/{2,}")
CONTROLLER_MOUNT = "agent-controller"  # an alias of /api


def normalise(request: HttpRequest) -> None:
    path = request.path_info
    if "//" in path:
        path = _SLASHES.sub("/", path)
    parts = path.split("/")
    # ['', 'api', '<org?>', '<root>', ...]
    if len(parts) > 1 and parts[1] == CONTROLLER_MOUNT:
        parts[1] = "api"
        path = "/".join(parts)
    if len(parts) > 3 and parts[1] == "api" and parts[2] not in API_ROOTS and parts[3] in API_ROOTS:
        request.url_organization_id = parts[2]
        path = "/".join(parts[:2] + parts[3:])
    request.path_info = path


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path_info:
        return True
    if not request.META.get("QUERY_STRING"):  # most API calls: no QueryDict to build
        return False
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists())


class ApiPathMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        normalise(request)
        if request.path_info.startswith("/api/") and _has_nul(request):
            # No text column (PostgreSQL's least of all) can hold NUL: refuse it before any lookup.
            response = JsonResponse(
                {"detail": "Bad request: NUL (%00) is not allowed in the URL"}, status=400
            )
            return self._later(response) if self.is_async else response
        if self.is_async:
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return await self.get_response(request)

    async def _later(self, response: HttpResponse) -> HttpResponse:
        return response


def is_api_request(request: HttpRequest) -> bool:
    """Whether the request is for the key-authenticated API (/api/..., /agent-controller/...).

    Decided on the path as `ApiPathMiddleware` left it (the alias mapped to /api/): every path under
    /api/ resolves to an API view or the API's JSON 404 (console.urls), never to a console page.
    """
    return request.path_info.startswith("/api/")


class ConsoleOnlyMiddleware:
    """settings.CONSOLE_MIDDLEWARE (sessions, CSRF, sign-in, messages) for everything but the API.

    The API authenticates by x-api-key only; a session lookup, a CSRF check, a lazy user and a
    message store per call are CPU it never uses. Console pages go through the same middleware, in
    the same order and with the same hooks (CSRF's `process_view` included), as if each were listed
    in MIDDLEWARE itself.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        handler: Callable = get_response
        views: list[Callable] = []
        for path in reversed(settings.CONSOLE_MIDDLEWARE):
            middleware = import_string(path)
            if not (
                getattr(middleware, "sync_capable", True) and getattr(middleware, "async_capable", False)
            ):
                raise ImproperlyConfigured(f"{path} in CONSOLE_MIDDLEWARE must be sync and async capable")
            instance = middleware(handler)
            if hasattr(instance, "process_template_response") or hasattr(instance, "process_exception"):
                raise ImproperlyConfigured(f"{path}: only process_view hooks are passed on here")
            if hasattr(instance, "process_view"):
                views.insert(0, instance.process_view)
            handler = convert_exception_to_response(instance)
        self.console = handler
        self._views = views
        if self.is_async:
            markcoroutinefunction(self)
            self._async_views = [v if iscoroutinefunction(v) else sync_to_async(v) for v in views]
            self.process_view = self._aprocess_view
        else:
            self.process_view = self._process_view

    def __call__(self, request: HttpRequest) -> Any:
        return (self.get_response if is_api_request(request) else self.console)(request)

    def _process_view(self, request: HttpRequest, view: Callable, args: tuple, kwargs: dict) -> Any:
        if is_api_request(request):
            return None
        for hook in self._views:
            response = hook(request, view, args, kwargs)
            if response is not None:
                return response
        return None

    async def _aprocess_view(self, request: HttpRequest, view: Callable, args: tuple, kwargs: dict) -> Any:
        if is_api_request(request):
            return None
        for hook in self._async_views:
            response = await hook(request, view, args, kwargs)
            if response is not None:
                return response
        return None


CSRF_MIDDLEWARE = "django.middleware.csrf.CsrfViewMiddleware"


@checks.register(checks.Tags.security)
def check_console_csrf(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Stands in for Django's security.W003 (silenced in settings, since CSRF is not listed in
    MIDDLEWARE itself): the console's pages must be CSRF-protected, through either list."""
    if CSRF_MIDDLEWARE in settings.MIDDLEWARE:
        return []
    through_console = (
        f"{__name__}.ConsoleOnlyMiddleware" in settings.MIDDLEWARE
        and CSRF_MIDDLEWARE in getattr(settings, "CONSOLE_MIDDLEWARE", [])
    )
    if through_console:
        return []
    return [
        checks.Error(
            f"{CSRF_MIDDLEWARE} is neither in MIDDLEWARE nor in CONSOLE_MIDDLEWARE (with "
            f"{__name__}.ConsoleOnlyMiddleware in MIDDLEWARE): the console's forms would take forged posts.",
            id="console.E001",
        )
    ]
