"""POST /mcp_auth/{agent_id}/{user_id}/get_token: an external worker gets a task user's MCP token."""

from __future__ import annotations

import pytest

from console.models import Agent, McpTokenAccess, UserToken
from tests.conftest import create_body

GITHUB = {
    "url": "https://mcp.github.test/mcp",
    "transport": "streamable-http",
    "auth_type": "oauth2",
    "name": "GitHub",
}


@pytest.fixture
def agent(alice) -> Agent:
    r = alice.post(
        "/api/v1/agents",
        {
            "name": "Coder",
            "framework": "external",
            "graph": [
                {"id": "gi-github", "type": "mcp", "name": "GitHub", "settings": {"mcp_settings": GITHUB}},
                {
                    "id": "gi-open",
                    "type": "mcp",
                    "name": "Open",
                    "settings": {"mcp_settings": {"url": "https://open.test/mcp"}},
                },
            ],
        },
    )
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def details(**extra) -> dict:
    return {
        "id": None,
        "type": "remote",
        "name": "GitHub",
        "command": None,
        "url": GITHUB["url"],
        "transport": "streamable-http",
        "auth_type": "oauth2",
        "api_key": None,
        "headers": {},
        **extra,
    }


def test_a_token_sent_with_a_task_is_held_for_that_user(alice, agent):
    body = create_body(
        "hi",
        input={"text": "hi", "user": {"id": "u-7", "email": "u7@example.com"}},
        user_tokens={"gi-github": "ghp_user7_secret"},
    )
    assert alice.post(f"/api/agent-execution/{agent.id}", body).status_code == 200
    row = UserToken.objects.get(external_user_id="u-7", graph_item_key="gi-github")
    assert "ghp_user7_secret" not in row.token_encrypted and row.reveal() == "ghp_user7_secret"
    r = alice.post(f"/api/mcp_auth/{agent.id}/u-7/get_token?generate_login_url=true", details())
    assert r.status_code == 200
    assert r.json() == {
        "type": "token_ready",
        "data": {"access_token": "ghp_user7_secret", "server_url": GITHUB["url"], "server_name": "GitHub"},
    }
    access = McpTokenAccess.objects.get()
    assert (access.user_id, access.graph_item_key, access.outcome) == ("u-7", "gi-github", "token_ready")
    assert access.api_key.membership.user.email == "alice@example.com"
    shared = alice.post(f"/api/mcp_auth/{agent.id}/{agent.id}_u-7/get_token", details())
    assert shared.json()["type"] == "token_ready"


def test_no_token_is_a_token_issue_for_oauth_and_not_supported_without_auth(alice, agent):
    r = alice.post(f"/api/mcp_auth/{agent.id}/nobody/get_token", details())
    assert (
        r.json()["type"] == "token_issue" and "No token stored for user nobody" in r.json()["data"]["message"]
    )
    r = alice.post(
        f"/api/mcp_auth/{agent.id}/nobody/get_token", details(url="https://open.test/mcp", auth_type="none")
    )
    assert r.json()["type"] == "not_supported"


def test_only_the_organizations_keys_may_ask(alice, charlie, agent):
    alice.post(
        f"/api/agent-execution/{agent.id}",
        create_body(
            "hi",
            input={"text": "hi", "user": {"id": "u-7", "email": "u7@example.com"}},
            user_tokens={"gi-github": "ghp_user7_secret"},
        ),
    )
    r = charlie.post(f"/api/mcp_auth/{agent.id}/u-7/get_token", details())
    assert r.status_code == 404
    assert "ghp_user7_secret" not in r.content.decode()
    r = alice.client.post(
        f"/api/mcp_auth/{agent.id}/u-7/get_token", data="{}", content_type="application/json"
    )
    assert r.status_code == 401
    assert alice.post(f"/api/mcp_auth/{agent.id}/u-7/get_token", raw=b"[").status_code == 400


def test_sdk_fail_open_routes_answer_at_once(alice, agent):
    assert alice.get("/api/metadata/default_llm_extra_headers").json() == {}
    assert alice.get(f"/api/memories/{agent.id}?user_id=u-7").status_code == 404
    assert alice.post(f"/api/tools/{agent.id}/channel-presence", {}).status_code == 404
    assert alice.post("/api/media/extract", {"url": "x"}).status_code == 404
    sdk = alice.get(f"/api/agents/{agent.id}").json()
    assert sdk["agno_settings"] == {"session_storage": False} and "model_api_key" not in sdk


def test_a_member_cannot_act_as_another_user(alice, bob, vera, agent):
    alice.post(
        f"/api/agent-execution/{agent.id}",
        create_body(
            "hi",
            input={"text": "hi", "user": {"id": "u-7", "email": "u7@example.com"}},
            user_tokens={"gi-github": "ghp_user7_secret"},
        ),
    )
    r = bob.post(
        f"/api/agent-execution/{agent.id}",
        create_body(
            "as u-7",
            input={"text": "as u-7", "user": {"id": "u-7", "email": "u7@example.com"}},
            user_tokens={"gi-github": "ghp_bobs_token"},
        ),
    )
    assert r.status_code == 403 and "input.user may only name you" in r.json()["detail"]
    assert UserToken.objects.get(external_user_id="u-7").reveal() == "ghp_user7_secret"  # not overwritten
    for persona in (bob, vera):
        refused = persona.post(f"/api/mcp_auth/{agent.id}/u-7/get_token", details())
        assert refused.status_code == 200 and refused.json()["type"] == "token_issue"
        assert "ghp_user7_secret" not in refused.content.decode()
    audit = McpTokenAccess.objects.filter(user_id="u-7").order_by("id").values_list("outcome", flat=True)
    assert list(audit)[-2:] == ["refused", "refused"]  # same answer as "no token", told apart in the audit
    own = bob.post(f"/api/mcp_auth/{agent.id}/{bob.member.vault_id}/get_token", details())
    assert own.status_code == 200 and own.json()["type"] == "token_issue"


def test_unknown_routes_answer_json_404_to_a_client_without_csrf(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    r = client.post(
        "/api/tools/x/channel-presence",
        data="{}",
        content_type="application/json",
        headers={"x-api-key": alice.key},
    )
    assert r.status_code == 404 and r["Content-Type"] == "application/json"
