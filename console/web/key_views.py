"""/keys/ (the organization's keys, admins) and the personal keys of /account/: create, list, revoke.

A new key is shown once, in the answer to the POST that created it (never stored, never in a URL).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console import keys
from console.errors import Conflict, Invalid
from console.models import ROLE_RANK, Role
from console.web.guard import member_page


class KeyForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=keys.NAME_MAX, help_text="What will use it, e.g. CI deploys."
    )
    role = forms.ChoiceField(label="Role", required=False, help_text="At most your own role.")

    def __init__(self, role: str, *args, with_role: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if with_role:
            allowed = [r for r in Role.values if ROLE_RANK[Role(r)] <= ROLE_RANK[Role(role)]]
            self.fields["role"].choices = [
                ("", f"As its creator ({role})"),
                *[(r, r) for r in reversed(allowed)],
            ]
        else:
            del self.fields["role"]


def create_from_form(request: HttpRequest, form: KeyForm) -> keys.NewKey | None:
    """Create the key the form describes; the task API's refusal lands next to its field."""
    if not form.is_valid():
        return None
    try:
        return keys.create_key(request.actor, form.cleaned_data["name"], form.cleaned_data.get("role") or "")
    except Invalid as exc:
        form.add_error(exc.extra.get("field") if exc.extra.get("field") in form.fields else None, exc.message)
    return None


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"  # the page may show a new key
    return response


@member_page(role=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def keys_page(request: HttpRequest) -> HttpResponse:
    form = KeyForm(request.actor.role, request.POST or None)
    new = create_from_form(request, form) if request.method == "POST" else None
    if new is not None:
        form = KeyForm(request.actor.role)
    status = 400 if request.method == "POST" and new is None else 200
    context = {"nav": "keys", "form": form, "new": new, "keys": keys.organization_keys(request.actor)}
    return _no_store(render(request, "admin_pages/keys.html", context, status=status))


@member_page
@require_POST
def revoke(request: HttpRequest, key_id: str) -> HttpResponse:
    back = "/account/" if request.POST.get("next") == "/account/" else "/keys/"
    try:
        key = keys.revoke_key(request.actor, key_id)  # another's or unknown: NotFound, a 404 page
    except Conflict as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Revoked {key.name} ({key.display}); it no longer works.")
    return redirect(back)
