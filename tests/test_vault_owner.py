"""Who a task's user is, and whose vault tokens a caller may read or replace.

A service key (an admin's or owner's API key) names end users in input.user; a member's key and a
console session act as that member, whose one vault identity is their membership's vault_id.
"""

from __future__ import annotations

import pytest

from console.access import actor_for_membership
from console.errors import Forbidden
from console.models import Agent, Membership, Role, UserToken
from tasks_app import actions
from tasks_app.models import Task
from tasks_app.schemas import TaskCreateIn
from tests.conftest import create_body, make_persona
from tests.test_mcp_get_token import details


@pytest.fixture
def agent(alice) -> Agent:
    r = alice.post(
        "/api/v1/agents",
        {
            "name": "Coder",
            "framework": "external",
            "graph": [
                {
                    "id": "gi-github",
                    "type": "mcp",
                    "name": "GitHub",
                    "settings": {
                        "mcp_settings": {"url": "https://mcp.github.test/mcp", "auth_type": "oauth2"}
                    },
                }
            ],
        },
    )
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def create(persona, agent: Agent, user: dict | None = None, tokens: dict | None = None):
    return persona.post(
        f"/api/agent-execution/{agent.id}",
        create_body("hi", input={"text": "hi", "files": [], "user": user}, user_tokens=tokens),
    )


def get_token(persona, agent: Agent, user_id: str) -> dict:
    r = persona.post(f"/api/mcp_auth/{agent.id}/{user_id}/get_token", details())
    assert r.status_code == 200, r.content
    return r.json()


def test_it_gives_every_member_one_stable_unique_vault_id(alice, bob, charlie):
    ids = [p.member.vault_id for p in (alice, bob, charlie)]
    assert all(i.startswith("mbr_") for i in ids) and len(set(ids)) == 3
    bob.member.refresh_from_db()
    assert bob.member.vault_id == ids[1]


def test_a_member_whose_ids_equal_an_end_users_cannot_read_or_replace_their_token(alice, bob, agent):
    user = bob.member.user
    collisions = [str(user.pk), user.email]
    for end_user in collisions:
        r = create(
            alice, agent, {"id": end_user, "email": f"x-{end_user}@end.test"}, {"gi-github": "tok-end"}
        )
        assert r.status_code == 200, r.content
    # A row stored before bob had his vault id (an old vault entry) stays an end user's.
    UserToken.objects.create(
        organization=alice.org,
        external_user_id=bob.member.vault_id,
        graph_item_key="gi-github",
        token_encrypted=UserToken.objects.first().token_encrypted,
    )
    for end_user in [*collisions, bob.member.vault_id, f"{agent.id}_{user.email}"]:
        answer = get_token(bob, agent, end_user)
        assert answer["type"] == "token_issue" and "tok-end" not in str(answer)
    for end_user in collisions:
        r = create(bob, agent, {"id": end_user, "email": user.email}, {"gi-github": "tok-bob"})
        assert r.status_code == 403
    assert create(bob, agent, None, {"gi-github": "tok-bob"}).status_code == 200
    external = UserToken.objects.filter(member__isnull=True)
    assert sorted(external.values_list("external_user_id", flat=True)) == sorted(
        [*collisions, bob.member.vault_id]
    )
    assert {row.reveal() for row in external} == {"tok-end"}
    assert UserToken.objects.get(member=bob.member).reveal() == "tok-bob"
    assert get_token(bob, agent, bob.member.vault_id)["data"]["access_token"] == "tok-bob"


def test_a_member_key_naming_another_user_is_refused(bob, agent):
    for user in (
        {"id": "u-9", "email": "u9@example.com"},
        {"id": "", "email": "someone@example.com"},
        {"id": bob.member.vault_id, "email": "someone@example.com"},
    ):
        r = create(bob, agent, user, {"gi-github": "tok-bob"})
        assert r.status_code == 403, user
        assert r.json()["detail"].startswith("A member's API key acts as that member")
    assert not UserToken.objects.exists() and not Task.objects.exists()


def test_a_member_key_acts_as_that_member(bob, agent):
    plain = create(bob, agent)
    named = create(bob, agent, {"id": bob.member.vault_id, "email": "BOB@example.com", "first_name": "Bob"})
    by_email = create(bob, agent, {"email": "bob@example.com"})
    for r in (plain, named, by_email):
        assert r.status_code == 200, r.content
        assert r.json()["input"]["user"]["id"] == bob.member.vault_id
        assert r.json()["input"]["user"]["email"] == "bob@example.com"
        task = Task.objects.get(pk=r.json()["id"])
        assert (task.vault_member_id, task.vault_external_id, task.user_id) == (
            bob.member.pk,
            "",
            bob.member.vault_id,
        )
    assert named.json()["input"]["user"]["first_name"] == "Bob"


def test_service_keys_name_end_users_and_members(alice, bob, agent):
    dave = make_persona("dave", alice.org, Role.ADMIN)
    r = create(dave, agent, {"id": "u-end", "email": "end@example.com"}, {"gi-github": "tok-end"})
    assert r.status_code == 200 and r.json()["input"]["user"]["id"] == "u-end"
    assert Task.objects.get(pk=r.json()["id"]).vault_external_id == "u-end"
    assert get_token(alice, agent, "u-end")["data"]["access_token"] == "tok-end"
    # A worker acting on a member's task names the member by vault id.
    bobs = {"id": bob.member.vault_id, "email": "bob@example.com"}
    r = create(alice, agent, bobs, {"gi-github": "tok-bob"})
    assert Task.objects.get(pk=r.json()["id"]).vault_member_id == bob.member.pk
    assert UserToken.objects.get(member=bob.member).reveal() == "tok-bob"
    assert get_token(dave, agent, bob.member.vault_id)["data"]["access_token"] == "tok-bob"
    # Without input.user a service key's task runs as its own member.
    own = create(alice, agent).json()
    assert own["input"]["user"] is None
    assert Task.objects.get(pk=own["id"]).vault_member_id == alice.member.pk


def test_a_console_session_runs_tasks_as_the_signed_in_member(alice, agent):
    actor = actor_for_membership(Membership.objects.select_related("user").get(pk=alice.member.pk))
    assert not actor.is_service_key  # an owner in the console is still only themselves
    task = actions.create_task(actor, agent.id, TaskCreateIn.model_validate({"input": {"text": "hi"}}))
    assert task.input_user["id"] == alice.member.vault_id and task.input_user["email"] == "alice@example.com"
    assert task.vault_member_id == alice.member.pk and task.created_by_user_id == alice.member.user_id
    body = {"input": {"text": "hi", "user": {"id": "u-end", "email": "end@example.com"}}}
    with pytest.raises(Forbidden):
        actions.create_task(actor, agent.id, TaskCreateIn.model_validate(body))


def test_tokens_follow_the_user_of_the_running_turn(alice, bob, agent):
    from tasks_app.actions import task_user_tokens

    def follow(persona, task_id: str, user: dict | None, tokens: dict | None):
        assert (
            alice.patch(f"/api/agent-execution/{task_id}/update", {"status": "completed"}).status_code == 200
        )
        body = create_body(
            "more", id=task_id, input={"text": "more", "files": [], "user": user}, user_tokens=tokens
        )
        r = persona.post(f"/api/agent-execution/{agent.id}", body)
        assert r.status_code == 200, r.content
        return Task.objects.get(pk=task_id)

    dana = {"id": "u-dana", "email": "dana@example.com"}
    task_id = create(alice, agent, dana, {"gi-github": "tok-dana"}).json()["id"]
    same = follow(alice, task_id, None, {"gi-other": "tok-dana-2"})
    assert task_user_tokens(same) == {"gi-github": "tok-dana", "gi-other": "tok-dana-2"}
    assert same.vault_external_id == "u-dana" and same.input_user["id"] == "u-dana"
    erin = follow(alice, task_id, {"id": "u-erin", "email": "erin@example.com"}, None)
    assert task_user_tokens(erin) == {} and erin.vault_external_id == "u-erin"
    bobs = follow(bob, task_id, None, {"gi-github": "tok-bob"})
    assert task_user_tokens(bobs) == {"gi-github": "tok-bob"}
    assert (bobs.vault_member_id, bobs.vault_external_id) == (bob.member.pk, "")
    again = follow(bob, task_id, None, None)
    assert (
        task_user_tokens(again) == {"gi-github": "tok-bob"} and again.input_user["id"] == bob.member.vault_id
    )
