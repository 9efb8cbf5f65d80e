"""/keys/ and the personal keys of /account/: the key shown once with a copy button, listed by name,
prefix and last 4; Revoke takes effect at once; roles and other organizations."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache

from console.models import ApiKey, AuditEvent
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def _new_key(html: str) -> str:
    return re.search(r'id="new-key" value="(atc_[^"]+)"', html).group(1)


def test_it_creates_a_key_shown_once_that_works_at_once(alice):
    client = signed_in(alice)
    r = client.post("/keys/", {"name": "CI deploys", "role": "viewer"})
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
    html = r.content.decode()
    raw = _new_key(html)
    assert 'data-copy="new-key"' in html and "only time" in html
    assert client.get("/api/v1/agents", headers={"x-api-key": raw}).status_code == 200
    again = client.get("/keys/").content.decode()
    assert raw not in again and f"{raw[:8]}…{raw[-4:]}" in again and "CI deploys" in again
    [entry] = AuditEvent.objects.filter(action="key.created")
    assert entry.actor_label == "alice@example.com" and entry.actor_key_id is None


def test_revoke_stops_the_key_at_once(alice):
    client = signed_in(alice)
    raw = _new_key(client.post("/keys/", {"name": "temp"}).content.decode())
    key = ApiKey.objects.get(name="temp")
    r = client.post(f"/keys/{key.pk}/revoke/", follow=True)
    assert "Revoked temp" in r.content.decode()
    assert client.get("/api/v1/agents", headers={"x-api-key": raw}).status_code == 401
    assert client.post(f"/keys/{key.pk}/revoke/", follow=True).content.decode().count("already revoked") == 1


def test_it_puts_errors_next_to_the_field(alice):
    client = signed_in(alice)
    r = client.post("/keys/", {"name": ""})
    assert r.status_code == 400 and 'id="id_name_error"' in r.content.decode()
    alice.member.role = "admin"
    alice.member.save()
    r = client.post("/keys/", {"name": "x", "role": "owner"})
    assert r.status_code == 400 and 'id="id_role_error"' in r.content.decode()
    assert not ApiKey.objects.filter(name="x").exists()


def test_a_member_cannot_reach_the_keys_page_but_has_personal_keys(bob):
    client = signed_in(bob)
    assert client.get("/keys/").status_code == 403
    r = client.post("/account/", {"form": "key", "name": "my laptop"})
    assert r.status_code == 200
    raw = _new_key(r.content.decode())
    key = ApiKey.objects.get(name="my laptop")
    assert key.membership == bob.member and key.effective_role == "member"
    assert client.get("/api/v1/agents", headers={"x-api-key": raw}).status_code == 200
    assert "my laptop" in client.get("/account/").content.decode()


def test_a_member_cannot_revoke_someone_elses_key(alice, bob):
    client = signed_in(bob)
    alices = ApiKey.objects.get(membership=alice.member)
    assert client.post(f"/keys/{alices.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=alices.pk).revoked_at is None


def test_charlie_from_another_org_sees_and_revokes_nothing_of_alices(alice, charlie):
    client = signed_in(charlie)
    alices = ApiKey.objects.get(membership=alice.member)
    assert "alice@example.com" not in client.get("/keys/").content.decode()
    assert client.post(f"/keys/{alices.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=alices.pk).revoked_at is None
