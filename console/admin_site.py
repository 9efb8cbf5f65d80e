"""Django's own /admin/: off unless the operator sets DJANGO_ADMIN=1; then superusers only, signed in
through the console's sign-in (its rate limit and audit log), never through a second login form."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path


def _superuser(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.is_superuser


def _console_sign_in(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    return redirect_to_login(request.GET.get("next") or "/admin/", "/")


def urls() -> list[URLPattern | URLResolver]:
    """The /admin/ route when enabled, else none (so /admin/ is the console's 404)."""
    if not getattr(settings, "DJANGO_ADMIN", False):
        return []
    admin.site.has_permission = _superuser
    admin.site.login = _console_sign_in
    return [path("admin/", admin.site.urls)]
