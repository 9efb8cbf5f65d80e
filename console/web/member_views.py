"""/members/ (owners and admins: invite, change roles, deactivate, reactivate) and /invite/<token>/.

Views validate, call one function of console.members as the session's Actor, and render.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login, password_validation
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console import members
from console.errors import Conflict, Forbidden, Invalid, NotFound
from console.models import ROLE_RANK, Role
from console.web.guard import member_page
from console.web.session import SESSION_ORG


def _roles_up_to(role: str) -> list[tuple[str, str]]:
    return [(r, r) for r in Role.values if ROLE_RANK[Role(r)] <= ROLE_RANK[Role(role)]]


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    role = forms.ChoiceField(label="Role")

    def __init__(self, role: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _roles_up_to(role)
        self.fields["role"].initial = Role.MEMBER


def _page(request: HttpRequest, form: InviteForm, new=None, status: int = 200) -> HttpResponse:
    context = {
        "nav": "members",
        "form": form,
        "new": new,
        "invite_url": request.build_absolute_uri(new.path) if new else "",
        "members": members.members(request.actor),
        "invitations": members.invitations(request.actor),
        "roles": _roles_up_to(request.actor.role),
        "grantable": [r for r, _ in _roles_up_to(request.actor.role)],
        "hours": members.invite_hours(),
    }
    response = render(request, "admin_pages/members.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may show a new invitation link
    return response


@member_page(role=Role.ADMIN)
@require_GET
def members_page(request: HttpRequest) -> HttpResponse:
    return _page(request, InviteForm(request.actor.role))


@member_page(role=Role.ADMIN)
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.actor.role, request.POST)
    if form.is_valid():
        try:
            new = members.invite_member(
                request.actor,
                form.cleaned_data["email"],
                form.cleaned_data["role"],
                base_url=request.build_absolute_uri("/").rstrip("/"),
            )
        except Invalid as exc:
            form.add_error(exc.extra.get("field"), exc.message.split(": ", 1)[-1])
        else:
            return _page(request, InviteForm(request.actor.role), new)
    return _page(request, form, status=400)


def _act(request: HttpRequest, fn: Callable[[], object], success: str) -> HttpResponse:
    try:
        fn()
    except (Conflict, Invalid) as exc:
        messages.error(request, exc.message.split(": ", 1)[-1] if isinstance(exc, Invalid) else exc.message)
    else:
        messages.success(request, success)
    return redirect("/members/")


@member_page(role=Role.ADMIN)
@require_POST
def change_role(request: HttpRequest, member_id: str) -> HttpResponse:
    role = request.POST.get("role", "")
    return _act(request, lambda: members.change_role(request.actor, member_id, role), f"Role set to {role}.")


@member_page(role=Role.ADMIN)
@require_POST
def deactivate(request: HttpRequest, member_id: str) -> HttpResponse:
    return _act(request, lambda: members.set_active(request.actor, member_id, False), "Member deactivated.")


@member_page(role=Role.ADMIN)
@require_POST
def reactivate(request: HttpRequest, member_id: str) -> HttpResponse:
    return _act(request, lambda: members.set_active(request.actor, member_id, True), "Member reactivated.")


@member_page(role=Role.ADMIN)
@require_POST
def revoke_invitation(request: HttpRequest, invitation_id: str) -> HttpResponse:
    return _act(
        request, lambda: members.revoke_invitation(request.actor, invitation_id), "Invitation revoked."
    )


# ---- accepting an invitation ------------------------------------------------------------------


class JoinForm(forms.Form):
    password1 = forms.CharField(label="Password", strip=False, max_length=4096, widget=forms.PasswordInput)
    password2 = forms.CharField(
        label="Password again", strip=False, max_length=4096, widget=forms.PasswordInput
    )

    def __init__(self, email: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.email = email
        for name in ("password1", "password2"):
            self.fields[name].widget.attrs["autocomplete"] = "new-password"

    def clean(self) -> dict:
        data = super().clean()
        one, two = data.get("password1"), data.get("password2")
        if one and two and one != two:
            self.add_error("password2", "The two passwords differ.")
        elif one:
            try:
                password_validation.validate_password(one)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return data


INVITE_TOKEN = "console_invite_token"


@require_GET
def invite_link(request: HttpRequest, token: str) -> HttpResponse:
    """The mailed link: keep its token in the session and go on to a URL without it, so no later
    request, error log or Referer header carries the token (as Django's password reset does)."""
    request.session[INVITE_TOKEN] = token
    return redirect("/invite/")


@require_http_methods(["GET", "POST"])
def accept(request: HttpRequest) -> HttpResponse:
    """Set a password and join, or join as the signed-in account the invitation names."""
    token = request.session.get(INVITE_TOKEN, "")
    try:
        invitation = members.find_invitation(token)
    except NotFound as exc:
        return render(request, "invite_gone.html", {"message": exc.message}, status=404)
    signed_in = request.user.is_authenticated
    existing = signed_in and request.user.email.lower() == invitation.email.lower()
    has_account = get_user_model().objects.filter(email__iexact=invitation.email).exists()
    form = JoinForm(invitation.email, request.POST or None) if not signed_in and not has_account else None
    context = {
        "invitation": invitation,
        "form": form,
        "existing": existing,
        "has_account": has_account,
        "signed_in": signed_in,
        "next": "/invite/",
    }
    if request.method == "POST" and (existing or (form is not None and form.is_valid())):
        try:
            member = members.accept_invitation(
                token,
                form.cleaned_data["password1"] if form else "",
                existing=request.user if existing else None,
            )
        except (NotFound, Conflict, Forbidden) as exc:
            context["error"] = exc.message
            return render(request, "account/invite.html", context, status=exc.status_code)
        if not existing:
            login(request, member.user, backend="django.contrib.auth.backends.ModelBackend")
        request.session.pop(INVITE_TOKEN, None)
        request.session[SESSION_ORG] = member.organization_id
        messages.success(request, f"Welcome to {member.organization.name}.")
        return redirect("/tasks/")
    return render(request, "account/invite.html", context, status=400 if request.method == "POST" else 200)
