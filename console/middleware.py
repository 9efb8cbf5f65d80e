"""Path normalisation for the xpander-compatible API.

The official SDK calls every route with or without a leading /{organization_id} segment and may
produce `//` when XPANDER_BASE_URL ends with a slash; both map to the same views here. The API is
also mounted at /agent-controller: a base URL whose first path segment is `agent-controller` makes
the SDK put the organization segment on every REST route, as xpander's agent-controller expects.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

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
