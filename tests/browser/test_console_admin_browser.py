"""The administration pages in a real browser (same setup as test_console_browser): an admin builds an
agent with an MCP server and a sub-agent and runs it from "try it"; an invited member signs up through
the link; a viewer is kept out; a key made on /keys/ works at once and stops (its open stream too) when
revoked; the audit log names who did each. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
import threading
import time
import uuid

import httpx
import pytest

from tests.browser.test_console_browser import SHOTS, sign_in
from tests.test_runtime_run import builtin_agent
from tests.tools.scripted_model import Turn

pytestmark = [pytest.mark.live, pytest.mark.browser]
ORG = "Admin Browser Org"


@pytest.fixture(scope="module")
def admins(daphne_server):
    return {
        "alice": daphne_server.account(ORG, "alice@admin-browser.test"),
        "vera": daphne_server.account(ORG, "vera@admin-browser.test", role="viewer"),
    }


def test_an_admin_builds_an_agent_with_an_mcp_server_and_a_sub_agent_and_tries_it(
    browser, daphne_server, admins, model, mcp_server_session
):
    api = daphne_server.client(admins["alice"])
    sub = builtin_agent(api, model, name=f"Summariser {uuid.uuid4().hex[:4]}")
    name = f"Researcher {uuid.uuid4().hex[:4]}"
    page = sign_in(browser, daphne_server, "alice@admin-browser.test")
    page.goto(f"{daphne_server.url}/agents/new/")
    page.locator("#id_name").fill(name)
    page.locator("#id_instructions").fill("Answer briefly.")
    page.locator("#id_model_provider").select_option("openai_compatible")
    page.locator("#id_model_name").fill("scripted")
    page.locator("#id_model_base_url").fill(model.base_url)
    page.locator("#id_model_api_key").fill("sk-browser-model-key")
    page.locator("#id_mcp-0-name").fill("Tools")
    page.locator("#id_mcp-0-url").fill(mcp_server_session.url)
    page.locator("#id_mcp-0-auth_type").select_option("api_key")
    page.locator("#id_mcp-0-api_key").fill("tok-alice")
    page.get_by_label(sub["name"]).check()
    page.get_by_role("button", name="Create agent").click()
    page.wait_for_url(re.compile(r".*/agents/[0-9a-f-]+/$"))
    assert page.get_by_text(f"Agent {name} created.").is_visible()
    assert page.get_by_role("button", name="Copy the ID of Tools").is_visible()  # shown by console.js
    content = page.content()
    assert "sk-browser-model-key" not in content and "tok-alice" not in content
    page.screenshot(path=str(SHOTS / "agent-edit.png"), full_page=True)

    marker = f"[try-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.tool("whoami", {}), Turn.reply("You are alice, from the try-it box.")], key=marker)
    page.locator("#try-prompt").fill(f"{marker} Who am I?")
    page.get_by_role("button", name="Run and watch").click()
    page.wait_for_url(re.compile(r".*/tasks/[0-9a-f-]+/$"))
    page.get_by_text("You are alice, from the try-it box.").wait_for(timeout=20000)
    page.goto(f"{daphne_server.url}/agents/")
    assert page.get_by_role("link", name=name).is_visible()
    page.screenshot(path=str(SHOTS / "agents.png"), full_page=True)
    page.context.close()


def test_an_invited_member_signs_up_through_the_link_and_creates_a_task(
    browser, daphne_server, admins, model
):
    api = daphne_server.client(admins["alice"])
    agent = builtin_agent(api, model, name=f"Greeter {uuid.uuid4().hex[:4]}")
    email = f"dana-{uuid.uuid4().hex[:4]}@admin-browser.test"
    page = sign_in(browser, daphne_server, "alice@admin-browser.test")
    page.goto(f"{daphne_server.url}/members/")
    page.get_by_label("Email").fill(email)
    page.locator("#id_role").select_option("member")
    page.get_by_role("button", name="Invite").click()
    link = page.locator("#invite-link").input_value()
    assert "/invite/inv_" in link
    page.screenshot(path=str(SHOTS / "members.png"), full_page=True)

    dana = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    dana.goto(link)
    dana.wait_for_url(f"{daphne_server.url}/invite/")
    dana.locator("#id_password1").fill("a long browser passphrase 7")
    dana.locator("#id_password2").fill("a long browser passphrase 7")
    dana.get_by_role("button", name="Set password and join").click()
    dana.wait_for_url(f"{daphne_server.url}/tasks/")
    marker = f"[dana-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("Hello Dana.")], key=marker)
    dana.goto(f"{daphne_server.url}/tasks/new/")
    dana.get_by_label("Agent").select_option(label=agent["name"])
    dana.get_by_label("Prompt").fill(f"{marker} Say hello.")
    dana.get_by_role("button", name="Create task").click()
    dana.get_by_text("Hello Dana.").wait_for(timeout=20000)
    assert dana.goto(link).url.endswith("/invite/")  # the link is used up
    assert "unknown, used or expired" in dana.content()
    dana.context.close()
    page.context.close()


def test_a_viewer_cannot_reach_the_admin_pages(browser, daphne_server, admins):
    page = sign_in(browser, daphne_server, "vera@admin-browser.test")
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Dashboard").is_visible()
    assert nav.get_by_role("link", name="Agents").count() == 0
    for path in ("/agents/", "/agents/new/", "/members/", "/keys/", "/audit/"):
        assert page.goto(f"{daphne_server.url}{path}").status == 403, path
    page.goto(f"{daphne_server.url}/account/")
    page.screenshot(path=str(SHOTS / "account.png"), full_page=True)
    page.context.close()


def _stream(url: str, key: str, out: dict) -> None:
    with httpx.Client(timeout=30) as client, client.stream("GET", url, headers={"x-api-key": key}) as r:
        out["status"] = r.status_code
        out["opened"].set()
        for _ in r.iter_lines():
            pass
    out["ended"] = time.monotonic()


def test_a_key_made_on_the_keys_page_works_at_once_and_stops_with_its_stream_when_revoked(
    browser, daphne_server, admins
):
    alice = admins["alice"]
    api = daphne_server.client(alice)
    ext = api.post("/v1/agents", json={"name": f"Ext {uuid.uuid4().hex[:4]}", "framework": "external"}).json()
    task = api.post(f"/agent-execution/{ext['id']}", json={"input": {"text": "wait"}}).json()
    page = sign_in(browser, daphne_server, "alice@admin-browser.test")
    page.goto(f"{daphne_server.url}/keys/")
    page.get_by_label("Name").fill("Browser CI")
    page.get_by_role("button", name="Create key").click()
    raw = page.locator("#new-key").input_value()
    assert raw.startswith("atc_")
    # A key, even a throwaway one, never goes into the repository's screenshots.
    page.screenshot(path=str(SHOTS / "keys.png"), full_page=True, mask=[page.locator("#new-key")])
    assert httpx.get(f"{daphne_server.api}/v1/agents", headers={"x-api-key": raw}).status_code == 200

    out: dict = {"opened": threading.Event()}
    url = f"{daphne_server.api}/{alice.organization_id}/agent-execution/{task['id']}/events"
    reader = threading.Thread(target=_stream, args=(url, raw, out), daemon=True)
    reader.start()
    assert out["opened"].wait(10) and out["status"] == 200
    page.goto(f"{daphne_server.url}/keys/")
    page.get_by_role("button", name="Revoke Browser CI").click()
    revoked = time.monotonic()
    assert page.get_by_text("it no longer works").is_visible()
    reader.join(timeout=8)
    assert "ended" in out and out["ended"] - revoked < 6  # the open stream closed
    assert httpx.get(f"{daphne_server.api}/v1/agents", headers={"x-api-key": raw}).status_code == 401
    page.context.close()


def test_the_audit_log_names_who_did_each_change_and_the_dashboard_draws(browser, daphne_server, admins):
    page = sign_in(browser, daphne_server, "alice@admin-browser.test")
    page.goto(f"{daphne_server.url}/audit/")
    rows = page.locator("tr[data-action]")
    actions = {
        rows.nth(i).get_attribute("data-action"): rows.nth(i).inner_text() for i in range(rows.count())
    }
    for action in ("agent.created", "member.invited", "member.joined", "key.created", "key.revoked"):
        assert action in actions, action
    assert "alice@admin-browser.test" in actions["key.revoked"]
    assert "dana-" in actions["member.joined"]
    page.locator("#id_action").select_option("key")
    page.get_by_role("button", name="Filter").click()
    assert set(page.locator("tr[data-action]").evaluate_all("rs => rs.map(r => r.dataset.action)")) <= {
        "key.created",
        "key.revoked",
    }
    page.goto(f"{daphne_server.url}/audit/")
    page.screenshot(path=str(SHOTS / "audit.png"), full_page=True)
    page.goto(f"{daphne_server.url}/dashboard/")
    assert page.locator("svg.chart").count() >= 4
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
    page.context.close()
