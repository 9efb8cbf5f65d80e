"""API keys: only a hash is stored, prefix and last 4 shown, last use recorded, revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.utils import timezone

from console.access import forget_api_keys
from console.models import ApiKey


def rewrite_last_use(key: ApiKey, when) -> None:
    """Set the key's last use as if time had passed; the cached caller expires with it (an
    .update() sends no signal, so it is forgotten here, as API_KEY_CACHE_SECONDS would)."""
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=when)
    forget_api_keys()


def test_only_a_hash_of_the_key_is_stored(alice):
    key = ApiKey.objects.get(membership=alice.member)
    assert key.key_hash == hashlib.sha256(alice.key.encode()).hexdigest()
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(isinstance(v, str) and alice.key in v for v in row.values())


def test_it_shows_the_prefix_and_last_four(alice):
    key = ApiKey.objects.get(membership=alice.member)
    assert key.prefix == alice.key[:8] and key.prefix.startswith("atc_")
    assert key.last4 == alice.key[-4:]
    assert key.display == f"{alice.key[:8]}…{alice.key[-4:]}"
    assert str(key) == key.display


def test_each_issued_key_is_different(alice):
    _, second = ApiKey.issue(alice.member, name="ci")
    _, third = ApiKey.issue(alice.member, name="ci")
    assert len({alice.key, second, third}) == 3
    assert len(second) > 40


def test_it_records_the_last_use(alice, external_agent):
    key = ApiKey.objects.get(membership=alice.member)
    rewrite_last_use(key, None)
    before = timezone.now()
    assert alice.get("/api/v1/agents").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_at >= before


def test_it_records_the_last_use_at_most_once_a_minute(alice):
    key = ApiKey.objects.get(membership=alice.member)
    recent = timezone.now() - timedelta(seconds=10)
    rewrite_last_use(key, recent)
    alice.get("/api/v1/agents")
    key.refresh_from_db()
    assert key.last_used_at == recent
    stale = timezone.now() - timedelta(minutes=5)
    rewrite_last_use(key, stale)
    alice.get("/api/v1/agents")
    key.refresh_from_db()
    assert key.last_used_at > stale + timedelta(minutes=4)


def test_a_revoked_key_is_refused_and_others_keep_working(alice, external_agent):
    _, spare = ApiKey.issue(alice.member, name="spare")
    key = ApiKey.objects.get(membership=alice.member, name="default")
    key.revoke()
    revoked_at = key.revoked_at
    key.revoke()  # revoking twice keeps the first time
    key.refresh_from_db()
    assert key.revoked_at == revoked_at
    r = alice.get(f"/api/agents/{external_agent.id}")
    assert r.status_code == 401
    assert r.json()["detail"] == "This API key was revoked"
    r = alice.get(f"/api/agents/{external_agent.id}", **{"x-api-key": spare})
    assert r.status_code == 200


def test_a_revoked_key_cannot_stream(alice, task_of):
    task = task_of()
    ApiKey.objects.get(membership=alice.member).revoke()
    r = alice.get(f"/api/agent-execution/{task['id']}/events")
    assert r.status_code == 401
    assert r["Content-Type"].startswith("application/json")


def test_missing_and_unknown_keys_are_refused(alice, external_agent):
    r = alice.client.get(f"/api/agents/{external_agent.id}")
    assert r.status_code == 401
    assert r["Content-Type"].startswith("application/json")
    assert "x-api-key" in r.json()["detail"]
    for wrong in ("atc_wrong", alice.key[:-1], "", " "):
        r = alice.get(f"/api/agents/{external_agent.id}", **{"x-api-key": wrong})
        assert r.status_code == 401, wrong


def test_the_key_must_be_sent_as_x_api_key(alice, external_agent):
    r = alice.client.get(f"/api/agents/{external_agent.id}", headers={"Authorization": f"Bearer {alice.key}"})
    assert r.status_code == 401


def test_a_key_acts_with_its_members_role(bob, vera, task_of):
    task = task_of()
    assert bob.post("/api/v1/agents", {"name": "x"}).status_code == 403
    assert (
        bob.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "ok"}).status_code == 200
    )
    assert (
        vera.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "no"}).status_code == 403
    )
    assert vera.get(f"/api/agent-execution/{task['id']}/status").status_code == 200


def test_a_key_stops_working_when_its_member_leaves(bob, external_agent):
    assert bob.get(f"/api/agents/{external_agent.id}").status_code == 200
    membership_id = bob.member.pk
    bob.member.delete()
    assert bob.get(f"/api/agents/{external_agent.id}").status_code == 401
    assert not ApiKey.objects.filter(membership_id=membership_id).exists()
