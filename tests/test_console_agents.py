"""/agents/: admins create, edit and delete agents with the validation of POST /api/v1/agents, its
errors next to the field; secrets write-only; graph ids with copy buttons; roles and other orgs."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from console.models import Agent, AuditEvent, GraphItem
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db
MODEL_KEY = "sk-console-model-key-123456"
MCP_KEY = "mcp-console-secret-7890"


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def form(**extra) -> dict:
    data = {
        "name": "Scout",
        "unique_name": "",
        "description": "",
        "instructions": "Be brief.",
        "framework": "builtin",
        "model_provider": "openai",
        "model_name": "gpt-4o-mini",
        "model_base_url": "",
        "model_api_key": "",
        "tool_call_limit": "",
        "mcp-TOTAL_FORMS": "1",
        "mcp-INITIAL_FORMS": "0",
        "mcp-0-id": "",
        "mcp-0-name": "",
        "mcp-0-url": "",
        "mcp-0-transport": "streamable-http",
        "mcp-0-auth_type": "none",
    }
    data.update(extra)
    return data


def test_an_admin_creates_an_agent_with_an_mcp_server_and_a_sub_agent(alice):
    client = signed_in(alice)
    helper = Agent.objects.create(organization=alice.org, name="Helper", unique_name="helper")
    r = client.post(
        "/agents/new/",
        form(
            model_api_key=MODEL_KEY,
            sub_agents=[helper.id],
            **{
                "mcp-0-name": "Docs",
                "mcp-0-url": "http://127.0.0.1:9/mcp",
                "mcp-0-auth_type": "api_key",
                "mcp-0-api_key": MCP_KEY,
            },
        ),
    )
    assert r.status_code == 302, r.content.decode()
    agent = Agent.objects.get(name="Scout")
    assert r["Location"] == f"/agents/{agent.id}/"
    assert agent.get_model_api_key() == MODEL_KEY
    mcp, sub = agent.graph_items.all()
    assert (mcp.type, mcp.name, mcp.mcp_settings["url"]) == ("mcp", "Docs", "http://127.0.0.1:9/mcp")
    assert mcp.secret_settings() == {"api_key": MCP_KEY}
    assert (sub.type, sub.item_id) == ("agent", helper.id)
    page = client.get(f"/agents/{agent.id}/").content.decode()
    assert MODEL_KEY not in page and MCP_KEY not in page
    assert "Set. Leave empty to keep it" in page
    assert f'<code id="gi-0">{mcp.key}</code>' in page and 'data-copy="gi-0"' in page
    assert 'action="/tasks/new/"' in page  # the "try it" box
    assert AuditEvent.objects.get(action="agent.created").actor_label == "alice@example.com"


def test_editing_keeps_secrets_left_empty_and_settings_the_form_does_not_show(alice):
    created = alice.post(
        "/api/v1/agents",
        {
            "name": "Scout",
            "model_api_key": MODEL_KEY,
            "graph": [
                {
                    "id": "docs",
                    "type": "mcp",
                    "settings": {
                        "mcp_settings": {
                            "url": "http://127.0.0.1:9/mcp",
                            "auth_type": "api_key",
                            "api_key": MCP_KEY,
                            "allowed_tools": ["search"],
                        }
                    },
                }
            ],
        },
    ).json()
    client = signed_in(alice)
    r = client.post(
        f"/agents/{created['id']}/",
        form(
            model_name="gpt-4.1",
            **{
                "mcp-INITIAL_FORMS": "1",
                "mcp-TOTAL_FORMS": "2",
                "mcp-0-id": "docs",
                "mcp-0-name": "Docs",
                "mcp-0-url": "http://127.0.0.1:9/mcp",
                "mcp-0-auth_type": "api_key",
                "mcp-1-transport": "streamable-http",
                "mcp-1-auth_type": "none",
            },
        ),
    )
    assert r.status_code == 302, r.content.decode()
    agent = Agent.objects.get(pk=created["id"])
    assert agent.model_name == "gpt-4.1" and agent.get_model_api_key() == MODEL_KEY
    item = GraphItem.objects.get(agent=agent, key="docs")
    assert item.secret_settings() == {"api_key": MCP_KEY}
    assert item.mcp_settings["allowed_tools"] == ["search"]
    entry = AuditEvent.objects.get(action="agent.updated")
    assert entry.changes["model_name"] == {"from": "gpt-4o-mini", "to": "gpt-4.1"}
    assert "model_api_key" not in entry.changes


def test_it_shows_the_api_validation_next_to_the_field(alice):
    client = signed_in(alice)
    r = client.post("/agents/new/", form(unique_name="bad name!"))
    assert r.status_code == 400
    assert 'id="id_unique_name_error"' in r.content.decode() and "letters, digits" in r.content.decode()
    r = client.post("/agents/new/", form(**{"mcp-0-url": "ftp://files.example/mcp"}))
    assert r.status_code == 400
    assert 'id="id_mcp-0-url_error"' in r.content.decode() and "http(s) URL" in r.content.decode()
    r = client.post("/agents/new/", form(**{"mcp-0-url": "http://127.0.0.2/mcp"}))
    assert r.status_code == 400 and 'id="id_mcp-0-url_error"' in r.content.decode()
    assert not Agent.objects.exists()


def test_a_duplicate_unique_name_is_shown_by_its_field(alice):
    Agent.objects.create(organization=alice.org, name="Scout", unique_name="scout")
    r = signed_in(alice).post("/agents/new/", form(unique_name="scout"))
    assert r.status_code == 400 and 'id="id_unique_name_error"' in r.content.decode()


def test_a_sub_agent_cycle_is_refused_with_a_clear_message(alice):
    a = alice.post("/api/v1/agents", {"name": "A"}).json()["id"]
    b = alice.post("/api/v1/agents", {"name": "B", "graph": [{"type": "agent", "item_id": a}]}).json()["id"]
    r = signed_in(alice).post(f"/agents/{a}/", form(name="A", sub_agents=[b]))
    assert r.status_code == 400
    assert 'id="id_sub_agents_error"' in r.content.decode() and "delegates back" in r.content.decode()
    assert not GraphItem.objects.filter(agent_id=a).exists()


def test_it_deletes_an_agent_or_says_why_not(alice, task_of, external_agent):
    client = signed_in(alice)
    spare = alice.post("/api/v1/agents", {"name": "Spare"}).json()["id"]
    assert client.post(f"/agents/{spare}/delete/").status_code == 302
    assert not Agent.objects.filter(pk=spare).exists()
    task_of()
    r = client.post(f"/agents/{external_agent.id}/delete/", follow=True)
    assert "has 1 tasks" in r.content.decode()


def test_members_and_viewers_cannot_reach_agent_pages(alice, bob, vera):
    agent = alice.post("/api/v1/agents", {"name": "Scout"}).json()["id"]
    for persona in (bob, vera):
        client = signed_in(persona)
        assert client.get("/agents/").status_code == 403
        assert client.post("/agents/new/", form()).status_code == 403
        assert client.post(f"/agents/{agent}/delete/").status_code == 403
    assert Agent.objects.count() == 1


def test_charlie_from_another_org_cannot_see_or_change_alices_agent(alice, charlie):
    agent = alice.post("/api/v1/agents", {"name": "Scout"}).json()["id"]
    client = signed_in(charlie)
    assert "Scout" not in client.get("/agents/").content.decode()
    assert client.get(f"/agents/{agent}/").status_code == 404
    assert client.post(f"/agents/{agent}/", form(name="Mine")).status_code == 404
    assert client.post(f"/agents/{agent}/delete/").status_code == 404
    r = client.post("/agents/new/", form(name="Theirs", sub_agents=[agent]))
    assert r.status_code == 400 and 'id="id_sub_agents_error"' in r.content.decode()
    assert Agent.objects.get(pk=agent).name == "Scout"


def test_an_external_agents_page_lists_its_live_workers_and_their_tasks(alice, external_agent):
    from console.access import actor_for_key
    from tasks_app.actions import workers
    from tests.conftest import create_body

    client = signed_in(alice)
    assert "No worker is connected" in client.get(f"/agents/{external_agent.id}/").content.decode()
    actor = actor_for_key(alice.key)
    worker = workers.register_worker(actor, external_agent.id, environment="laptop")
    task_id = alice.post(f"/api/agent-execution/{external_agent.id}", create_body("hello")).json()["id"]
    assert workers.deliver_task(task_id, worker.id) is not None
    page = client.get(f"/agents/{external_agent.id}/").content.decode()
    assert worker.id in page and "laptop" in page
    assert f'href="/tasks/{task_id}/"' in page
    workers.disconnect_worker(worker.id)
    assert worker.id not in client.get(f"/agents/{external_agent.id}/").content.decode()
