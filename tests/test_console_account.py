"""/account/: every member, viewers included, edits their own profile and sees only their own keys."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from console.models import ApiKey, AuditEvent
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def test_a_viewer_edits_their_profile_and_it_is_recorded(vera):
    client = signed_in(vera)
    page = client.get("/account/")
    assert page.status_code == 200 and "vera@example.com" in page.content.decode()
    r = client.post("/account/", {"form": "profile", "first_name": "Vera", "last_name": "Viewer"})
    assert r.status_code == 302
    vera.member.user.refresh_from_db()
    assert vera.member.user.get_full_name() == "Vera Viewer"
    entry = AuditEvent.objects.get(action="member.profile_changed")
    assert entry.changes["first_name"] == {"from": "", "to": "Vera"}


def test_it_lists_only_the_members_own_keys(alice, bob):
    ApiKey.issue(alice.member, name="alice's robot")
    html = signed_in(bob).get("/account/").content.decode()
    assert "alice&#x27;s robot" not in html and "default" in html


def test_a_viewer_key_made_on_account_acts_as_a_viewer(vera):
    client = signed_in(vera)
    assert client.post("/account/", {"form": "key", "name": "read only"}).status_code == 200
    key = ApiKey.objects.get(name="read only")
    assert key.effective_role == "viewer"
    assert client.post("/account/", {"form": "key", "name": ""}).status_code == 400


def test_signed_out_visitors_are_sent_to_sign_in():
    from django.test import Client

    r = Client().get("/account/")
    assert r.status_code == 302 and r["Location"].startswith("/?next=")
