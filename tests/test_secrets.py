"""user_tokens and other secrets: encrypted at rest, never echoed, never written to events or activity."""

from __future__ import annotations

import json

import pytest
from django.apps import apps

from console import crypto
from tasks_app.actions import task_user_tokens
from tasks_app.models import ActivityEntry, Task, TaskEvent

TOKEN = "ghp_SuperSecretUserToken1234567890"
OAUTH = "ya29.oauth-access-token-abcdefghij"


def everything_stored(task_id: str) -> str:
    """Every column of the task, its events and its activity, as one string."""
    rows = [
        Task.objects.filter(pk=task_id).values().get(),
        *TaskEvent.objects.filter(task_id=task_id).values(),
        *ActivityEntry.objects.filter(task_id=task_id).values(),
    ]
    return json.dumps(rows, default=str)


def test_user_tokens_are_encrypted_at_rest(task_of):
    task = task_of(user_tokens={"gi-github": TOKEN, "gi-google": {"access_token": OAUTH}})
    row = Task.objects.get(pk=task["id"])
    assert row.user_tokens_encrypted
    assert TOKEN not in row.user_tokens_encrypted and OAUTH not in row.user_tokens_encrypted
    assert TOKEN not in everything_stored(task["id"]) and OAUTH not in everything_stored(task["id"])
    assert task_user_tokens(row) == {"gi-github": TOKEN, "gi-google": {"access_token": OAUTH}}


def test_no_table_holds_a_token_in_plaintext(alice, task_of, external_agent):
    task = task_of(user_tokens={"gi-github": TOKEN, "gi-google": {"access_token": OAUTH}})
    alice.post(f"/api/agent-execution/{task['id']}/events/push", [{"type": "chunk", "data": TOKEN}])
    r = alice.patch(
        f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": f"used {OAUTH}"}
    )
    assert r.json()["result"] == "used REDACTED"
    for model in apps.get_models():
        dump = json.dumps(list(model.objects.values()), default=str)
        assert TOKEN not in dump and OAUTH not in dump, model.__name__


def test_user_tokens_are_never_echoed(alice, task_of, external_agent):
    task = task_of(user_tokens={"gi-github": TOKEN})
    assert task["user_tokens"] is None
    reads = [
        alice.get(f"/api/agent-execution/{task['id']}/status"),
        alice.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "seen"}),
        alice.get(f"/api/agent-execution/executions/history/{external_agent.id}"),
        alice.get(f"/api/activity/{external_agent.id}/{task['id']}"),
        alice.delete(f"/api/agent-execution/{task['id']}"),
    ]
    for r in reads:
        assert r.status_code == 200
        assert TOKEN not in r.content.decode()
    assert reads[0].json()["user_tokens"] is None
    assert reads[-1].json()["user_tokens"] is None


def test_a_full_dump_with_null_user_tokens_keeps_the_stored_ones(alice, task_of):
    task = task_of(user_tokens={"gi-github": TOKEN})
    dump = {**task, "internal_status": "x", "user_tokens": None}
    assert alice.patch(f"/api/agent-execution/{task['id']}/update", dump).status_code == 200
    assert task_user_tokens(Task.objects.get(pk=task["id"])) == {"gi-github": TOKEN}


def test_pushed_events_are_masked_before_they_are_stored(alice, task_of, external_agent):
    task = task_of(user_tokens={"gi-github": TOKEN, "gi-google": {"access_token": OAUTH}})
    events = [
        {
            "type": "tool_call_request",
            "data": {
                "request_id": "r1",
                "tool_name": "http",
                "payload": {"headers": {"authorization": "Basic dXNlcjpwYXNz"}, "note": f"uses {TOKEN}"},
            },
        },
        {
            "type": "tool_call_result",
            "data": {
                "tool_name": "http",
                "payload": {"Authorization": f"Bearer {TOKEN}", "query": "repos"},
                "result": f"echo: {OAUTH}",
            },
        },
        {"type": "chunk", "data": f"the token is {TOKEN}"},
        {"type": "think", "data": f"I should not say {OAUTH}"},
    ]
    r = alice.post(f"/api/agent-execution/{task['id']}/events/push", events)
    assert r.status_code == 200
    stored = everything_stored(task["id"])
    assert TOKEN not in stored and OAUTH not in stored
    assert "dXNlcjpwYXNz" not in stored
    request, result, chunk, think = (
        TaskEvent.objects.filter(task_id=task["id"]).order_by("seq").values_list("data", flat=True)[1:]
    )
    assert request["payload"]["headers"]["authorization"] == "REDACTED"
    assert request["payload"]["note"] == "uses REDACTED"
    assert result["payload"] == {"Authorization": "REDACTED", "query": "repos"}
    assert chunk == "the token is REDACTED"
    assert think == "I should not say REDACTED"
    tool = ActivityEntry.objects.get(task_id=task["id"], kind="tool_call").data
    assert tool["payload"] == {"Authorization": "REDACTED", "query": "repos"}
    assert tool["result"] == "echo: REDACTED"
    activity = alice.get(f"/api/activity/{external_agent.id}/{task['id']}").content.decode()
    assert TOKEN not in activity and OAUTH not in activity


def test_a_bearer_token_is_masked_even_when_unknown(alice, task_of):
    task = task_of()
    alice.post(
        f"/api/agent-execution/{task['id']}/events/push",
        [{"type": "chunk", "data": "curl -H 'Authorization: Bearer abcdef123456789'"}],
    )
    assert "abcdef123456789" not in everything_stored(task["id"])


def test_the_result_and_prompt_are_masked_in_events(alice, task_of):
    task = task_of(f"use {TOKEN} please", user_tokens={"gi-github": TOKEN})
    alice.patch(
        f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": f"done with {TOKEN}"}
    )
    events = json.dumps(list(TaskEvent.objects.filter(task_id=task["id"]).values_list("data", flat=True)))
    activity = json.dumps(
        list(ActivityEntry.objects.filter(task_id=task["id"]).values_list("data", flat=True))
    )
    assert TOKEN not in events
    assert TOKEN not in activity


def test_a_follow_up_merges_tokens_without_storing_them_in_plaintext(alice, task_of, external_agent):
    task = task_of(user_tokens={"gi-github": TOKEN})
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": "R"})
    r = alice.post(
        f"/api/agent-execution/{external_agent.id}",
        {"id": task["id"], "input": {"text": "again"}, "user_tokens": {"gi-google": OAUTH}},
    )
    assert r.status_code == 200
    assert r.json()["user_tokens"] is None
    row = Task.objects.get(pk=task["id"])
    assert task_user_tokens(row) == {"gi-github": TOKEN, "gi-google": OAUTH}
    stored = everything_stored(task["id"])
    assert TOKEN not in stored and OAUTH not in stored


def test_an_invalid_token_is_not_echoed_in_the_error(alice, external_agent):
    r = alice.post(
        f"/api/agent-execution/{external_agent.id}",
        {"input": {"text": "x"}, "user_tokens": {"gi-1": ["not", TOKEN]}},
    )
    assert r.status_code == 422
    assert r.json()["field"].startswith("user_tokens")
    assert TOKEN not in r.content.decode()
    assert not Task.objects.exists()


def test_secret_names_are_recognised_long_or_short_and_long_ones_are_not_kept():
    from console.masking import _secret_name, is_secret_key, mask

    long_secret = "x" * 200 + "_api_key"
    long_plain = "y" * 200 + "_count"
    assert is_secret_key("apiKey") and is_secret_key("X-Api-Key") and not is_secret_key("keystone")
    assert is_secret_key(long_secret) and not is_secret_key(long_plain)
    assert mask({long_secret: "v", long_plain: "w"}) == {long_secret: "REDACTED", long_plain: "w"}
    _secret_name.cache_clear()
    is_secret_key(long_secret)
    is_secret_key("accessToken")
    assert _secret_name.cache_info().currsize == 1  # only the short name is cached


def test_a_decrypted_secret_follows_its_ciphertext_and_no_row_carries_it(alice):
    """A run reads the model key and the graph's secrets from several places: they are decrypted once
    per ciphertext, a changed one is decrypted again, a pickled or copied row reads the same, and a
    caller's change to what it was given stays its own."""
    import copy
    import pickle

    from console.models import Agent, GraphItem

    agent = Agent(organization=alice.org, name="Secretive")
    agent.set_model_api_key("sk-first")
    assert agent.get_model_api_key() == "sk-first"
    agent.set_model_api_key("sk-second")
    assert agent.get_model_api_key() == "sk-second"
    for twin in (pickle.loads(pickle.dumps(agent)), copy.copy(agent)):
        assert twin.get_model_api_key() == "sk-second"
    item = GraphItem(agent=agent, key="gi", type="mcp")
    item.secret_settings_encrypted = crypto.encrypt_json({"api_key": "k", "headers": {"X-T": "v"}})
    first = item.secret_settings()
    first["headers"]["X-T"] = "changed by a caller"
    assert item.secret_settings() == {"api_key": "k", "headers": {"X-T": "v"}}


def test_a_secret_is_decrypted_once_per_process_and_stored_ciphertext(alice, settings):
    """Seen through the keys: once a ciphertext was decrypted, its plaintext is read from memory even
    when the configured keys no longer decrypt it; a ciphertext not seen before is decrypted (and
    fails with those keys)."""
    from cryptography.fernet import Fernet

    from console import models

    agent = models.Agent.objects.create(organization=alice.org, name="Keyed once")
    agent.set_model_api_key("sk-once")
    agent.save()
    item = models.GraphItem(agent=agent, key="gi", type="mcp")
    item.secret_settings_encrypted = crypto.encrypt_json({"api_key": "mcp-key"})
    assert models.Agent.objects.get(pk=agent.pk).get_model_api_key() == "sk-once"
    assert item.secret_settings() == {"api_key": "mcp-key"}
    unseen = models.Agent(organization=alice.org, name="Unseen")
    unseen.set_model_api_key("sk-unseen")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # none of these decrypts them
    crypto._fernet.cache_clear()
    try:
        # each run reads the rows afresh: the same ciphertexts, read from memory
        assert models.Agent.objects.get(pk=agent.pk).get_model_api_key() == "sk-once"
        again = models.GraphItem(agent=agent, key="gi", type="mcp")
        again.secret_settings_encrypted = item.secret_settings_encrypted
        assert again.secret_settings() == {"api_key": "mcp-key"}
        with pytest.raises(crypto.DecryptionError):
            unseen.get_model_api_key()
    finally:
        crypto._fernet.cache_clear()


def test_the_decrypted_secrets_kept_are_bounded(alice, monkeypatch):
    from console import models

    monkeypatch.setattr(models, "PLAINTEXTS_KEPT", 2)
    for i in range(4):
        agent = models.Agent(organization=alice.org, name=f"Bounded {i}")
        agent.set_model_api_key(f"sk-{i}")
        assert agent.get_model_api_key() == f"sk-{i}"
    assert len(models._PLAINTEXTS) <= 2


def test_a_push_masks_the_vault_tokens_of_the_tasks_user_for_its_agent(alice):
    """A task that brings no tokens still masks what its user's vault holds for its agent's MCP
    servers (console.vault.tokens_of): the token given once by an earlier task of the same user."""
    from console.models import UserToken

    graph = [{"id": "gi-github", "type": "mcp", "name": "GitHub",
              "settings": {"mcp_settings": {"url": "http://127.0.0.1:9/mcp", "transport": "streamable-http"}}}]  # fmt: skip
    r = alice.post("/api/v1/agents", {"name": "Vaulted worker", "framework": "external", "graph": graph})
    assert r.status_code == 201, r.content
    agent_id = r.json()["id"]
    user = {"id": "end-user-7", "email": "seven@example.com"}

    def create(**extra: object) -> dict:
        r = alice.post(f"/api/agent-execution/{agent_id}", {"input": {"text": "hi", "user": user}, **extra})
        assert r.status_code == 200, r.content
        return r.json()

    create(user_tokens={"gi-github": TOKEN})
    held = UserToken.objects.get(external_user_id="end-user-7")
    assert held.graph_item_key == "gi-github" and TOKEN not in held.token_encrypted
    bare = create()
    assert task_user_tokens(Task.objects.get(pk=bare["id"])) == {}  # only the vault knows the token
    r = alice.post(
        f"/api/agent-execution/{bare['id']}/events/push",
        [{"type": "chunk", "data": f"the token is {TOKEN}"}, {"type": "think", "data": TOKEN}],
    )
    assert r.status_code == 200, r.content
    assert TOKEN not in everything_stored(bare["id"])
    stranger = alice.post(f"/api/agent-execution/{agent_id}", {"input": {"text": "hi"}}).json()
    alice.post(f"/api/agent-execution/{stranger['id']}/events/push", [{"type": "chunk", "data": "plain"}])
    assert TaskEvent.objects.filter(task_id=stranger["id"], type="chunk").get().data == "plain"


def test_a_push_masks_the_vault_tokens_of_the_member_it_runs_for(alice, bob):
    """The member branch of console.vault.tokens_of: a task for a member (by vault id) masks what
    the member's vault holds for the agent's MCP servers."""
    from console import vault

    graph = [{"id": "gi-linear", "type": "mcp", "name": "Linear",
              "settings": {"mcp_settings": {"url": "http://127.0.0.1:9/mcp", "transport": "streamable-http"}}}]  # fmt: skip
    r = alice.post("/api/v1/agents", {"name": "Member worker", "framework": "external", "graph": graph})
    assert r.status_code == 201, r.content
    agent_id = r.json()["id"]
    vault.store(bob.org.id, vault.Owner(member_id=bob.member.pk), "gi-linear", OAUTH, source="console")
    user = {"id": bob.member.vault_id, "email": "bob@example.com"}
    r = bob.post(f"/api/agent-execution/{agent_id}", {"input": {"text": "hi", "user": user}})
    assert r.status_code == 200, r.content
    task = Task.objects.get(pk=r.json()["id"])
    assert task.vault_member_id == bob.member.pk
    r = bob.post(f"/api/agent-execution/{task.id}/events/push", [{"type": "chunk", "data": f"got {OAUTH}"}])
    assert r.status_code == 200, r.content
    assert OAUTH not in everything_stored(task.id)
    assert TaskEvent.objects.get(task_id=task.id, type="chunk").data == "got REDACTED"
