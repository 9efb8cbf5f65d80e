"""/api/v1/connections: a service key sets, lists (masked) and deletes an end user's MCP token."""

from __future__ import annotations

import json

import pytest

from console.models import Agent, GraphItem, UserToken


@pytest.fixture
def item(alice) -> GraphItem:
    agent = Agent.objects.create(organization=alice.org, name="A", unique_name="a")
    settings = {"mcp_settings": {"url": "https://tools.example/mcp", "name": "Tools", "auth_type": "api_key"}}
    return GraphItem.objects.create(agent=agent, key="gi-tools", type="mcp", settings=settings)


def test_it_sets_lists_masked_and_deletes_an_end_users_token(alice, item):
    r = alice.call(
        "PUT", "/api/v1/connections/u-1/gi-tools", {"token": "  pat-secret-1234\n", "expires_in": 600}
    )
    assert r.status_code == 200, r.content
    assert (
        r.json()["last4"] == "1234" and r.json()["source"] == "api" and "pat-secret" not in r.content.decode()
    )
    assert UserToken.objects.get(external_user_id="u-1").reveal() == "pat-secret-1234"
    listed = alice.get("/api/v1/connections?user_id=u-1")
    assert [c["graph_item_key"] for c in listed.json()] == [
        "gi-tools"
    ] and "pat-secret" not in listed.content.decode()
    assert alice.delete("/api/v1/connections/u-1/gi-tools").status_code == 204
    assert alice.delete("/api/v1/connections/u-1/gi-tools").status_code == 404
    assert not UserToken.objects.exists()


def test_it_refuses_a_token_with_whitespace_inside(alice, item):
    r = alice.call("PUT", "/api/v1/connections/u-1/gi-tools", {"token": "pat one"})
    assert r.status_code == 422 and r.json()["field"] == "token"
    assert not UserToken.objects.exists()


def test_a_members_key_may_not_manage_connections(bob, item):
    assert bob.get("/api/v1/connections?user_id=u-1").status_code == 403
    assert bob.call("PUT", "/api/v1/connections/u-1/gi-tools", {"token": "x"}).status_code == 403


def test_another_organizations_server_and_connections_are_invisible(alice, charlie, item):
    alice.call("PUT", "/api/v1/connections/u-1/gi-tools", {"token": "pat-a"})
    assert charlie.call("PUT", "/api/v1/connections/u-1/gi-tools", {"token": "pat-c"}).status_code == 404
    assert charlie.get("/api/v1/connections?user_id=u-1").json() == []
    assert charlie.delete("/api/v1/connections/u-1/gi-tools").status_code == 404
    assert UserToken.objects.get().reveal() == "pat-a"


def test_it_rejects_unknown_fields(alice, item):
    r = alice.call(
        "PUT", "/api/v1/connections/u-1/gi-tools", raw=json.dumps({"token": "x", "owner": "y"}).encode()
    )
    assert r.status_code == 422


def test_a_service_key_cannot_set_or_remove_a_members_connection(alice, bob, item):
    vault_id = bob.member.vault_id
    assert (
        alice.call("PUT", f"/api/v1/connections/{vault_id}/gi-tools", {"token": "pat-x"}).status_code == 403
    )
    assert alice.delete(f"/api/v1/connections/{vault_id}/gi-tools").status_code == 403
    assert alice.get(f"/api/v1/connections?user_id={vault_id}").status_code == 403
    assert not UserToken.objects.exists()
