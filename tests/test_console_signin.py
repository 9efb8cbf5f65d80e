"""Signing in at /, signing out, changing the password, switching organization, CSP."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from console.models import Membership, Role
from tests.console_helpers import PASSWORD, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
    cache.clear()  # sign-in throttling counts live in the cache


def test_it_shows_the_sign_in_form_at_the_root(db):
    r = Client().get("/")
    assert r.status_code == 200
    html = r.content.decode()
    assert '<label for="id_email">Email' in html and '<label for="id_password">Password' in html
    assert ">Sign in</button>" in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_it_signs_in_and_lands_on_the_history(alice):
    client = signed_in(alice)
    r = client.get("/")
    assert r.status_code == 302 and r["Location"] == "/tasks/"
    page = client.get("/tasks/")
    assert page.status_code == 200
    assert "alice@example.com" in page.content.decode()


def test_it_returns_to_the_page_the_person_was_sent_from(alice):
    client = Client()
    r = client.get("/tasks/?status=completed")
    assert r.status_code == 302 and r["Location"].startswith("/?next=")
    alice.member.user.set_password(PASSWORD)
    alice.member.user.save()
    r = client.post(
        "/", {"email": "alice@example.com", "password": PASSWORD, "next": "/tasks/?status=completed"}
    )
    assert r["Location"] == "/tasks/?status=completed"


def test_it_never_redirects_off_site_after_sign_in(alice):
    alice.member.user.set_password(PASSWORD)
    alice.member.user.save()
    r = Client().post("/", {"email": "alice@example.com", "password": PASSWORD, "next": "https://evil.test/"})
    assert r["Location"] == "/tasks/"


def test_it_says_what_is_wrong_without_telling_which_emails_exist(alice):
    alice.member.user.set_password(PASSWORD)
    alice.member.user.save()
    wrong_password = Client().post("/", {"email": "alice@example.com", "password": "nope"})
    unknown = Client().post("/", {"email": "nobody@example.com", "password": "nope"})
    assert wrong_password.status_code == unknown.status_code == 400
    assert "Email or password is wrong." in wrong_password.content.decode()
    assert "Email or password is wrong." in unknown.content.decode()
    empty = Client().post("/", {"email": "", "password": ""})
    assert "This field is required." in empty.content.decode()


def test_it_slows_down_guessing_with_a_429(alice, settings):
    settings.CONSOLE_SIGNIN_ATTEMPTS = 3
    alice.member.user.set_password(PASSWORD)
    alice.member.user.save()
    client = Client()
    for _ in range(3):
        assert client.post("/", {"email": "alice@example.com", "password": "guess"}).status_code == 400
    r = client.post("/", {"email": "alice@example.com", "password": PASSWORD})
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.content.decode()


def test_it_refuses_a_deactivated_user(alice):
    alice.member.user.set_password(PASSWORD)
    alice.member.user.is_active = False
    alice.member.user.save()
    r = Client().post("/", {"email": "alice@example.com", "password": PASSWORD})
    assert r.status_code == 400


def test_it_signs_out_a_member_deactivated_while_signed_in(bob):
    client = signed_in(bob)
    get_user_model().objects.filter(pk=bob.member.user_id).update(is_active=False)
    r = client.get("/tasks/")
    assert r.status_code == 302 and r["Location"].startswith("/?next=")


def test_it_signs_out_a_member_removed_from_the_organization(bob):
    client = signed_in(bob)
    assert client.get("/tasks/").status_code == 200
    Membership.objects.filter(pk=bob.member.pk).delete()
    r = client.get("/tasks/")
    assert r.status_code == 302
    follow = client.get(r["Location"])
    assert "no longer a member" in follow.content.decode()


def test_sign_out_is_a_post_and_ends_the_session(alice):
    client = signed_in(alice)
    assert client.get("/signout/").status_code == 405
    assert client.post("/signout/").status_code == 302
    assert client.get("/tasks/").status_code == 302


def test_it_changes_the_password_and_keeps_the_session(alice):
    client = signed_in(alice)
    bad = client.post(
        "/account/password/",
        {"old_password": "wrong", "new_password1": "a-new-long-pass-1", "new_password2": "a-new-long-pass-1"},
    )
    assert bad.status_code == 400
    assert "Your old password was entered incorrectly" in bad.content.decode()
    r = client.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-new-long-pass-1",
            "new_password2": "a-new-long-pass-1",
        },
    )
    assert r.status_code == 302
    assert client.get("/tasks/").status_code == 200
    assert (
        Client().post("/", {"email": "alice@example.com", "password": "a-new-long-pass-1"}).status_code == 302
    )


def test_it_switches_organization_and_takes_the_role_from_that_membership(alice, charlie):
    Membership.objects.create(organization=charlie.org, user=alice.member.user, role=Role.VIEWER)
    client = signed_in(alice)
    page = client.get("/tasks/").content.decode()
    assert 'id="org-switch"' in page and "Bravo (viewer)" in page
    assert client.get("/tasks/new/").status_code == 200  # owner in Acme
    r = client.post("/org/", {"organization": charlie.org.id})
    assert r.status_code == 302
    assert client.get("/tasks/new/").status_code == 403  # viewer in Bravo


def test_it_will_not_switch_to_an_organization_the_user_is_not_in(alice, charlie):
    client = signed_in(alice)
    client.post("/org/", {"organization": charlie.org.id})
    assert client.session["console_organization_id"] == alice.org.id


def test_pages_carry_a_csp_without_unsafe_inline_or_eval(alice):
    client = signed_in(alice)
    for path in ("/", "/tasks/"):
        r = Client().get(path) if path == "/" else client.get(path)
        csp = r["Content-Security-Policy"]
        script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
        assert "'self'" in script and "unsafe-inline" not in script and "unsafe-eval" not in script
        assert "frame-ancestors 'none'" in csp


def test_forms_need_the_csrf_token(alice):
    alice.member.user.set_password(PASSWORD)
    alice.member.user.save()
    client = Client(enforce_csrf_checks=True)
    r = client.post("/", {"email": "alice@example.com", "password": PASSWORD})
    assert r.status_code == 403


def test_the_static_files_are_served(db):
    r = Client().get("/static/console/console.css")
    assert r.status_code == 200
    r = Client().get("/static/vendor/htmx/htmx.min.js")
    assert r.status_code == 200
