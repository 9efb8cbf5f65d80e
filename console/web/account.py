"""Signing in and out, changing one's password, and switching organization."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, login, logout, update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from console import audit
from console.web.guard import member_page
from console.web.session import SESSION_ORG, choose_organization

HOME = "/tasks/"


class SignInForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    password = forms.CharField(label="Password", strip=False, max_length=4096, widget=forms.PasswordInput)

    def __init__(self, request: HttpRequest, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.user = None
        self.account = None  # the account the email names, if any: failed sign-ins are recorded on it
        self.fields["email"].widget.attrs.update(autocomplete="username", autofocus=True)
        self.fields["password"].widget.attrs.update(autocomplete="current-password")

    def clean(self) -> dict:
        data = super().clean()
        email, password = data.get("email"), data.get("password")
        if not email or not password:
            return data
        account = get_user_model().objects.filter(email__iexact=email).order_by("pk").first()
        self.account = account
        user = (
            authenticate(self.request, username=account.get_username(), password=password)
            if account
            else None
        )
        if user is None:  # one message for both: do not tell which emails have accounts
            raise forms.ValidationError("Email or password is wrong.")
        self.user = user
        return data


def _attempts_keys(request: HttpRequest, email: str) -> tuple[str, str]:
    """Failed sign-ins are counted per account (guessing one password from many addresses) and per
    address (trying many accounts from one)."""
    return (
        f"signin-fail:email:{email.strip().lower()}",
        f"signin-fail:addr:{request.META.get('REMOTE_ADDR', '')}",
    )


def _throttled(account_failures: int, address_failures: int) -> str | None:
    if account_failures >= settings.CONSOLE_SIGNIN_ATTEMPTS:
        return "Too many failed sign-ins for this email. Wait 15 minutes and try again."
    if address_failures >= getattr(settings, "CONSOLE_SIGNIN_ADDRESS_ATTEMPTS", 50):
        return "Too many failed sign-ins from your address. Wait 15 minutes and try again."
    return None


def _safe_next(request: HttpRequest, value: str | None) -> str:
    if value and url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return value
    return HOME


@require_http_methods(["GET", "POST"])
def sign_in(request: HttpRequest) -> HttpResponse:
    """`/`: the sign-in page when signed out; signed in, the history (or where the person was going)."""
    next_url = request.POST.get("next") or request.GET.get("next")
    if request.user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request, next_url))
    form = SignInForm(request, request.POST or None)
    status = 200
    if request.method == "POST":
        account_key, address_key = _attempts_keys(request, request.POST.get("email", ""))
        failures = cache.get(account_key, 0)
        address_failures = cache.get(address_key, 0)
        refusal = _throttled(failures, address_failures)
        if refusal:
            form.is_valid()
            form.errors.clear()
            form.add_error(None, refusal)
            status = 429
        elif form.is_valid():
            cache.delete(account_key)  # the address count stays: one's own account never resets it
            login(request, form.user)  # a new session key: no fixation
            audit.record_sign_in(form.user, succeeded=True)
            request.session.pop(SESSION_ORG, None)
            return redirect(_safe_next(request, next_url))
        else:
            if form.non_field_errors():
                cache.set(account_key, failures + 1, 15 * 60)
                cache.set(address_key, address_failures + 1, 15 * 60)
                audit.record_sign_in(form.account, succeeded=False, email=request.POST.get("email", ""))
            status = 400
    return render(request, "account/sign_in.html", {"form": form, "next": next_url or ""}, status=status)


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.info(request, "You are signed out.")
    return redirect("/")


@member_page
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            user = form.save()
            update_session_auth_hash(request, user)  # keep this session, end the others
            messages.success(request, "Your password was changed.")
            return redirect(HOME)
        return render(request, "account/password.html", {"form": form}, status=400)
    return render(request, "account/password.html", {"form": form})


@member_page
@require_POST
def switch_organization(request: HttpRequest) -> HttpResponse:
    member = choose_organization(request, request.POST.get("organization", ""))
    if member is None:
        messages.error(request, "You are not a member of that organization.")
        return redirect(HOME, permanent=False)
    messages.success(request, f"Now working in {member.organization.name} as {member.role}.")
    return redirect(HOME)
