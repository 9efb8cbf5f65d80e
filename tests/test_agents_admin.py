"""/api/v1/agents: agent administration (POST/GET/PATCH/DELETE); writes need the admin role."""

from __future__ import annotations

import json

import pytest

from console.models import Agent, GraphItem, Role
from tests.conftest import make_persona

MODEL_KEY = "sk-model-key-0123456789abcdef"
MCP_KEY = "mcp-api-key-9876543210"


@pytest.fixture
def adam(org_a):
    """An admin of org A (not the owner)."""
    return make_persona("adam", org_a, Role.ADMIN)


def mcp_item(**extra) -> dict:
    item = {
        "type": "mcp",
        "name": "GitHub",
        "settings": {"mcp_settings": {"url": "https://mcp.example.com/mcp", "auth_type": "api_key"}},
    }
    item.update(extra)
    return item


def create(persona, body: dict):
    return persona.post("/api/v1/agents", body)


def test_it_creates_an_agent(alice):
    r = create(
        alice,
        {
            "name": "Analyst",
            "framework": "external",
            "instructions": {"general": "Be brief.", "role": ["Analyst"], "goal": []},
            "model_provider": "anthropic",
            "model_name": "claude-sonnet",
            "tool_call_limit": 5,
        },
    )
    assert r.status_code == 201
    assert r["Content-Type"].startswith("application/json")
    agent = r.json()
    assert agent["name"] == "Analyst"
    assert agent["unique_name"] == "analyst"
    assert agent["framework"] == "external"
    assert agent["instructions"] == "Be brief.\nAnalyst"
    assert (agent["model_provider"], agent["model_name"]) == ("anthropic", "claude-sonnet")
    assert agent["tool_call_limit"] == 5
    assert agent["organization_id"] == alice.org.id
    assert agent["has_model_api_key"] is False
    row = Agent.objects.get(pk=agent["id"])
    assert row.organization_id == alice.org.id and row.framework == "external"


def test_an_admin_can_manage_agents(adam):
    r = create(adam, {"name": "Helper"})
    assert r.status_code == 201
    agent_id = r.json()["id"]
    assert adam.patch(f"/api/v1/agents/{agent_id}", {"description": "d"}).status_code == 200
    assert adam.delete(f"/api/v1/agents/{agent_id}").status_code == 204


@pytest.mark.parametrize("who", ["bob", "vera"])
def test_members_and_viewers_can_read_but_not_write(who, request, alice):
    persona = request.getfixturevalue(who)
    agent = create(alice, {"name": "Shared"}).json()
    assert persona.get("/api/v1/agents").status_code == 200
    assert persona.get(f"/api/v1/agents/{agent['id']}").json()["name"] == "Shared"
    r = create(persona, {"name": "Mine"})
    assert r.status_code == 403
    assert "admin role" in r.json()["detail"]
    r = persona.patch(f"/api/v1/agents/{agent['id']}", {"name": "Renamed"})
    assert r.status_code == 403
    assert persona.delete(f"/api/v1/agents/{agent['id']}").status_code == 403
    assert list(Agent.objects.values_list("name", flat=True)) == ["Shared"]


def test_it_lists_the_organizations_agents_by_name(alice):
    create(alice, {"name": "Zed"})
    create(alice, {"name": "Alpha"})
    r = alice.get("/api/v1/agents")
    assert r.status_code == 200
    assert [a["name"] for a in r.json()] == ["Alpha", "Zed"]


def test_it_encrypts_the_model_api_key_and_never_echoes_it(alice):
    r = create(alice, {"name": "Keyed", "model_api_key": MODEL_KEY})
    assert r.status_code == 201
    assert MODEL_KEY not in r.content.decode()
    assert "model_api_key" not in r.json()
    assert r.json()["has_model_api_key"] is True
    row = Agent.objects.get(pk=r.json()["id"])
    assert MODEL_KEY not in row.model_api_key_encrypted
    assert row.get_model_api_key() == MODEL_KEY
    for path in ("/api/v1/agents", f"/api/v1/agents/{row.id}", f"/api/agents/{row.id}"):
        assert MODEL_KEY not in alice.get(path).content.decode()


def test_a_patch_keeps_the_model_api_key_unless_it_is_sent(alice):
    agent = create(alice, {"name": "Keyed", "model_api_key": MODEL_KEY}).json()
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"model_name": "gpt-4.1"})
    assert r.status_code == 200
    assert r.json()["model_name"] == "gpt-4.1"
    assert Agent.objects.get(pk=agent["id"]).get_model_api_key() == MODEL_KEY
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"model_api_key": None})
    assert r.json()["has_model_api_key"] is False
    assert Agent.objects.get(pk=agent["id"]).model_api_key_encrypted == ""


def test_graph_item_ids_are_stable(alice):
    helper = create(alice, {"name": "Helper"}).json()
    r = create(
        alice,
        {"name": "Lead", "graph": [mcp_item(), {"type": "agent", "item_id": helper["id"], "name": "Helper"}]},
    )
    assert r.status_code == 201
    graph = r.json()["graph"]
    ids = [g["id"] for g in graph]
    assert all(ids) and len(set(ids)) == 2
    assert graph[1]["item_id"] == helper["id"]
    agent_id = r.json()["id"]
    assert [g["id"] for g in alice.get(f"/api/v1/agents/{agent_id}").json()["graph"]] == ids
    assert [
        g["id"] for g in alice.patch(f"/api/v1/agents/{agent_id}", {"name": "Lead 2"}).json()["graph"]
    ] == ids
    # sending back the graph as read keeps every id
    r = alice.patch(f"/api/v1/agents/{agent_id}", {"graph": graph})
    assert r.status_code == 200
    assert [g["id"] for g in r.json()["graph"]] == ids
    assert list(GraphItem.objects.filter(agent_id=agent_id).values_list("key", flat=True)) == ids


def test_it_keeps_the_ids_it_is_given(alice):
    r = create(alice, {"name": "Lead", "graph": [mcp_item(id="gi-github")]})
    assert r.json()["graph"][0]["id"] == "gi-github"
    sdk_view = alice.get(f"/api/agents/{r.json()['id']}").json()
    assert sdk_view["graph"][0]["id"] == "gi-github"
    assert sdk_view["graph"][0]["settings"]["mcp_settings"]["url"] == "https://mcp.example.com/mcp"


def test_mcp_secrets_are_encrypted_and_never_echoed(alice):
    item = mcp_item()
    item["settings"]["mcp_settings"].update(api_key=MCP_KEY, headers={"X-Token": MCP_KEY})
    r = create(alice, {"name": "Lead", "graph": [item]})
    assert r.status_code == 201
    assert MCP_KEY not in r.content.decode()
    row = GraphItem.objects.get(agent_id=r.json()["id"])
    assert MCP_KEY not in json.dumps(row.settings) and MCP_KEY not in row.secret_settings_encrypted
    assert row.secret_settings() == {"api_key": MCP_KEY, "headers": {"X-Token": MCP_KEY}}
    assert MCP_KEY not in alice.get(f"/api/agents/{r.json()['id']}").content.decode()


def test_sending_back_the_graph_as_read_keeps_its_secrets(alice):
    item = mcp_item(id="gi-github")
    item["settings"]["mcp_settings"]["api_key"] = MCP_KEY
    agent = create(alice, {"name": "Lead", "graph": [item]}).json()
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"graph": agent["graph"]})
    assert r.status_code == 200
    assert GraphItem.objects.get(agent_id=agent["id"]).secret_settings() == {"api_key": MCP_KEY}
    # pointing the item at another server drops the old server's key
    moved = r.json()["graph"]
    moved[0]["settings"]["mcp_settings"]["url"] = "https://other.example.com/mcp"
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"graph": moved})
    assert r.status_code == 200
    assert GraphItem.objects.get(agent_id=agent["id"]).secret_settings() == {}


def test_an_explicit_null_clears_an_mcp_secret(alice):
    item = mcp_item(id="gi-github")
    item["settings"]["mcp_settings"]["api_key"] = MCP_KEY
    agent = create(alice, {"name": "Lead", "graph": [item]}).json()
    item["settings"]["mcp_settings"]["api_key"] = None
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"graph": [item]})
    assert r.status_code == 200
    assert GraphItem.objects.get(agent_id=agent["id"]).secret_settings() == {}


def test_it_names_the_field_of_a_bad_graph(alice, charlie):
    theirs = create(charlie, {"name": "Theirs"}).json()
    no_url = mcp_item()
    del no_url["settings"]["mcp_settings"]["url"]
    cases = [
        ([no_url], "graph[0].settings.mcp_settings.url"),
        ([{"type": "mcp", "name": "bare"}], "graph[0].settings.mcp_settings"),
        ([mcp_item(), {"type": "agent", "item_id": theirs["id"]}], "graph[1].item_id"),
        ([{"type": "agent"}], "graph[0].item_id"),
        ([mcp_item(id="gi-1"), mcp_item(id="gi-1")], "graph[1].id"),
        ([{"type": "tool"}], "graph[0].type"),
    ]
    for graph, field in cases:
        r = create(alice, {"name": "Bad", "graph": graph})
        assert r.status_code == 422, graph
        assert r.json()["field"] == field
        assert r.json()["detail"].startswith(field)
    assert not Agent.objects.filter(organization_id=alice.org.id).exists()
    assert not GraphItem.objects.exists()


def test_a_bad_graph_in_a_patch_changes_nothing(alice):
    agent = create(alice, {"name": "Lead", "graph": [mcp_item(id="gi-1")]}).json()
    r = alice.patch(
        f"/api/v1/agents/{agent['id']}",
        {"name": "Renamed", "graph": [mcp_item(id="gi-2"), {"type": "agent", "item_id": agent["id"]}]},
    )
    assert r.status_code == 422
    assert r.json()["field"] == "graph[1].item_id"
    assert Agent.objects.get(pk=agent["id"]).name == "Lead"
    assert list(GraphItem.objects.values_list("key", flat=True)) == ["gi-1"]


def test_it_names_a_field_of_the_wrong_type(alice):
    for body, field in [
        ({"framework": "builtin"}, "name"),
        ({"name": "x", "tool_call_limit": "many"}, "tool_call_limit"),
        ({"name": "x", "framework": "langchain"}, "framework"),
        ({"name": "x", "model_base_url": "not a url"}, "model_base_url"),
        ({"name": "x", "unique_name": "has spaces"}, "unique_name"),
        (
            {
                "name": "x",
                "graph": [
                    {
                        "id": "gi",
                        "type": "mcp",
                        "settings": {
                            "mcp_settings": {
                                "url": "http://127.0.0.1:9/mcp",
                                "share_user_token_across_other_agents": "true",
                            }
                        },
                    }
                ],
            },
            "graph[0].settings.mcp_settings.share_user_token_across_other_agents",
        ),
    ]:
        r = create(alice, body)
        assert r.status_code == 422, body
        assert r.json()["field"] == field
    assert not Agent.objects.exists()


def test_it_rejects_malformed_json(alice):
    r = alice.post("/api/v1/agents", raw=b"{name: 1}")
    assert r.status_code == 400
    assert "Malformed JSON" in r.json()["detail"]
    agent = create(alice, {"name": "A"}).json()
    r = alice.patch(f"/api/v1/agents/{agent['id']}", raw=b"{")
    assert r.status_code == 400


def test_unique_names_are_unique_in_an_organization(alice, charlie):
    assert create(alice, {"name": "Analyst"}).status_code == 201
    r = create(alice, {"name": "Analyst"})
    assert r.status_code == 409
    assert "analyst" in r.json()["detail"]
    assert create(charlie, {"name": "Analyst"}).status_code == 201
    assert Agent.objects.filter(organization_id=alice.org.id).count() == 1


def test_it_deletes_an_agent(alice):
    agent = create(alice, {"name": "Temp", "graph": [mcp_item()]}).json()
    r = alice.delete(f"/api/v1/agents/{agent['id']}")
    assert r.status_code == 204
    assert alice.get(f"/api/v1/agents/{agent['id']}").status_code == 404
    assert not GraphItem.objects.exists()


def test_it_refuses_to_delete_an_agent_with_tasks_or_a_parent(alice, task_of, external_agent):
    task_of()
    r = alice.delete(f"/api/v1/agents/{external_agent.id}")
    assert r.status_code == 409
    assert r.json()["tasks"] == 1
    helper = create(alice, {"name": "Helper"}).json()
    create(alice, {"name": "Lead", "graph": [{"type": "agent", "item_id": helper["id"]}]})
    r = alice.delete(f"/api/v1/agents/{helper['id']}")
    assert r.status_code == 409
    assert "Lead" in r.json()["detail"]
    assert Agent.objects.filter(pk__in=[external_agent.id, helper["id"]]).count() == 2


def test_it_rejects_unknown_agents(alice):
    for method in ("get", "patch", "delete"):
        r = getattr(alice, method)("/api/v1/agents/no-such-agent")
        assert r.status_code == 404
        assert r.json()["detail"] == "Agent no-such-agent not found"


def test_it_requires_an_api_key(alice):
    r = alice.client.post("/api/v1/agents", data='{"name": "x"}', content_type="application/json")
    assert r.status_code == 401
    assert not Agent.objects.exists()


def test_it_rejects_a_sub_agent_cycle(alice):
    a = alice.post("/api/v1/agents", {"name": "Cycle A"}).json()
    b = alice.post(
        "/api/v1/agents", {"name": "Cycle B", "graph": [{"type": "agent", "item_id": a["id"]}]}
    ).json()
    r = alice.patch(f"/api/v1/agents/{a['id']}", {"graph": [{"type": "agent", "item_id": b["id"]}]})
    assert r.status_code == 422
    assert r.json()["field"] == "graph[0].item_id" and "delegates back" in r.json()["detail"]


def test_secret_looking_mcp_settings_are_never_echoed(alice, vera):
    graph = [
        {
            "id": "gi-x",
            "type": "mcp",
            "settings": {
                "mcp_settings": {
                    "url": "https://mcp.test/mcp",
                    "access_token": "tok-very-secret",
                    "clientSecret": "cs-secret",
                }
            },
        }
    ]
    r = alice.post("/api/v1/agents", {"name": "Secretive", "graph": graph})
    assert r.status_code == 201
    for reader in (alice, vera):
        body = reader.get(f"/api/agents/{r.json()['id']}").content.decode()
        assert "tok-very-secret" not in body and "cs-secret" not in body
