"""The door of every console page: signed in, still a member, the right role; task API errors as pages."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from console.errors import Forbidden, NotFound, Unauthorized
from console.web.session import signed_in


def forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "403.html", {"message": message}, status=403)


def member_page(view: Callable | None = None, *, role: str | None = None) -> Callable:
    """Run `view` as the session's member (request.member, request.actor), at least `role` if given.

    Not signed in: to the sign-in page and back. Deactivated or removed: signed out with the reason.
    Another organization's object (NotFound) is a 404 page; a role too low a 403 page.
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), "/")
            try:
                signed = signed_in(request)
            except Unauthorized as exc:
                logout(request)
                messages.error(request, exc.message)
                return redirect_to_login(request.get_full_path(), "/")
            request.member, request.actor = signed.membership, signed.actor
            if role is not None and not signed.actor.can(role):
                return forbidden(request, f"Your role ({signed.membership.role}) may not do this.")
            try:
                return fn(request, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.message) from None
            except Forbidden as exc:
                return forbidden(request, exc.message)

        return inner

    return wrap(view) if view is not None else wrap
