"""/api/v1/keys: automation rotates keys with a service key; a new key works at once, a revoked one
stops at once; a key's role never exceeds its member's."""

from __future__ import annotations

import pytest

from console.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


def test_it_creates_a_key_shown_once_that_works_at_once(alice):
    r = alice.post("/api/v1/keys", {"name": "CI deploys"})
    assert r.status_code == 201, r.content
    body = r.json()
    raw = body["key"]
    assert raw.startswith("atc_") and body["prefix"] == raw[:8] and body["last4"] == raw[-4:]
    assert body["name"] == "CI deploys" and body["created_by"] == "alice@example.com"
    assert alice.client.get("/api/v1/agents", headers={"x-api-key": raw}).status_code == 200
    listed = alice.get("/api/v1/keys").json()
    assert {k["name"] for k in listed} == {"default", "CI deploys"}
    assert all("key" not in k for k in listed)
    assert raw not in str(list(AuditEvent.objects.values()))


def test_a_revoked_key_stops_working_at_once(alice):
    new = alice.post("/api/v1/keys", {"name": "old"}).json()
    assert alice.client.get("/api/v1/agents", headers={"x-api-key": new["key"]}).status_code == 200
    assert alice.delete(f"/api/v1/keys/{new['id']}").status_code == 204
    r = alice.client.get("/api/v1/agents", headers={"x-api-key": new["key"]})
    assert r.status_code == 401 and r.json()["detail"] == "This API key was revoked"
    assert alice.delete(f"/api/v1/keys/{new['id']}").status_code == 409
    actions = list(AuditEvent.objects.filter(object_type="key").values_list("action", flat=True))
    assert actions == ["key.created", "key.revoked"]


def test_a_key_with_a_lower_role_acts_with_that_role(alice):
    viewer = alice.post("/api/v1/keys", {"name": "dashboards", "role": "viewer"}).json()
    assert viewer["effective_role"] == "viewer"
    r = alice.client.post(
        "/api/v1/agents", {"name": "x"}, content_type="application/json", headers={"x-api-key": viewer["key"]}
    )
    assert r.status_code == 403


def test_it_never_gives_a_key_more_than_its_members_role(alice):
    admin = alice.member
    admin.role = "admin"
    admin.save()
    r = alice.post("/api/v1/keys", {"name": "escalate", "role": "owner"})
    assert r.status_code == 422 and r.json()["field"] == "role"
    key = ApiKey.objects.get(membership=admin, name="default")
    admin.role = "viewer"
    admin.save()
    assert key.effective_role == "viewer"  # a demoted member's keys are demoted with them


def test_it_validates_the_name(alice):
    r = alice.post("/api/v1/keys", {"name": ""})
    assert r.status_code == 422 and r.json()["field"] == "name"
    assert alice.post("/api/v1/keys", {"name": "x", "secret": 1}).status_code == 422


def test_it_needs_a_service_key(bob, vera):
    assert bob.get("/api/v1/keys").status_code == 403
    assert bob.post("/api/v1/keys", {"name": "mine"}).status_code == 403
    assert vera.delete("/api/v1/keys/1").status_code == 403


def test_charlie_cannot_see_or_revoke_alices_keys(alice, charlie):
    key = ApiKey.objects.get(membership=alice.member)
    assert charlie.delete(f"/api/v1/keys/{key.pk}").status_code == 404
    assert charlie.delete("/api/v1/keys/not-a-number").status_code == 404
    assert {k["created_by"] for k in charlie.get("/api/v1/keys").json()} == {"charlie@example.com"}
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_ids_out_of_range_are_404_and_400_never_500(alice):
    assert alice.delete(f"/api/v1/keys/{2**70}").status_code == 404
    assert alice.delete("/api/v1/keys/-1").status_code == 404
    assert alice.get(f"/api/v1/audit?before={2**70}").status_code == 400
    assert alice.get("/api/v1/audit?limit=" + "9" * 5000).status_code in (200, 400)


def test_an_admin_cannot_revoke_an_owners_key(alice, bob):
    bob.member.role = "admin"
    bob.member.save()
    owners = ApiKey.objects.get(membership=alice.member)
    r = bob.delete(f"/api/v1/keys/{owners.pk}")
    assert r.status_code == 403 and "owner" in r.json()["detail"]
    assert ApiKey.objects.get(pk=owners.pk).revoked_at is None
