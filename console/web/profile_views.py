"""/account/: every member's own profile, a link to change the password, and personal API keys."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from console import keys, members
from console.web.guard import member_page
from console.web.key_views import KeyForm, create_from_form


class ProfileForm(forms.Form):
    first_name = forms.CharField(label="First name", required=False, max_length=150)
    last_name = forms.CharField(label="Last name", required=False, max_length=150)


@member_page
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    user = request.member.user
    initial = {"first_name": user.first_name, "last_name": user.last_name}
    profile = ProfileForm(initial=initial)
    key_form = KeyForm(request.actor.role, with_role=False)
    new, status = None, 200
    if request.method == "POST" and request.POST.get("form") == "profile":
        profile = ProfileForm(request.POST, initial=initial)
        if profile.is_valid():
            members.update_profile(request.actor, **profile.cleaned_data)
            messages.success(request, "Your profile was saved.")
            return redirect("/account/")
        status = 400
    elif request.method == "POST":
        key_form = KeyForm(request.actor.role, request.POST, with_role=False)
        new = create_from_form(request, key_form)
        if new is None:
            status = 400
        else:
            key_form = KeyForm(request.actor.role, with_role=False)
    context = {
        "nav": "account",
        "profile": profile,
        "key_form": key_form,
        "new": new,
        "keys": keys.personal_keys(request.actor),
    }
    response = render(request, "account/account.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may show a new key
    return response
