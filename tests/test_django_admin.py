"""Django's /admin/ is off by default; turned on, it admits superusers only, through the console's sign-in."""

from __future__ import annotations

import importlib

import pytest
from django.test import Client
from django.urls import clear_url_caches

import console.urls
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_on(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.DJANGO_ADMIN = True
    importlib.reload(console.urls)
    clear_url_caches()
    yield
    settings.DJANGO_ADMIN = False
    importlib.reload(console.urls)
    clear_url_caches()


def test_it_is_off_by_default(alice):
    alice.member.user.is_superuser = alice.member.user.is_staff = True
    alice.member.user.save()
    assert signed_in(alice).get("/admin/").status_code == 404
    assert Client().get("/admin/login/").status_code == 404


def test_when_on_it_admits_superusers_only_and_has_no_login_form_of_its_own(admin_on, alice, bob):
    r = Client().get("/admin/login/?next=/admin/")
    assert r.status_code == 302 and r["Location"].startswith("/?next=")
    bob.member.user.is_staff = True  # staff without superuser: not enough
    bob.member.user.save()
    assert signed_in(bob).get("/admin/").status_code == 302
    alice.member.user.is_superuser = alice.member.user.is_staff = True
    alice.member.user.save()
    assert signed_in(alice).get("/admin/").status_code == 200
