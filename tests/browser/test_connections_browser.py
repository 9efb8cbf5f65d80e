"""Signing in to an MCP server from the browser: a member's task pauses for the sign-in, the live view
shows Sign in, the member signs in at the real authorization server in another tab, and the same
live view carries on to the answer, made as that member. Debian's chromium driven by Playwright
against a live daphne server, the scripted model and tests/tools/oauth_server.py."""

from __future__ import annotations

import uuid

import pytest

from tests.browser.test_console_browser import SHOTS, browser, create_task, model, sign_in  # noqa: F401
from tests.test_runtime_run import builtin_agent
from tests.tools.oauth_server import OAuthMCP
from tests.tools.scripted_model import Turn

pytestmark = [pytest.mark.live, pytest.mark.browser]
ORG = "Sign-in Browser Org"


@pytest.fixture(scope="module")
def oauth_server():
    with OAuthMCP() as running:
        yield running


def test_a_paused_task_carries_on_live_after_its_member_signs_in_in_another_tab(
    browser,  # noqa: F811
    daphne_server,
    model,  # noqa: F811
    oauth_server,
):
    daphne_server.account(ORG, "owner@signin.test")
    dora = daphne_server.account(ORG, "dora@signin.test", role="member")
    api = daphne_server.client(daphne_server.account(ORG, "owner@signin.test"))
    graph = [
        {
            "id": "gi-oauth",
            "type": "mcp",
            "name": "Tools",
            "settings": {
                "mcp_settings": {"url": oauth_server.mcp_url, "name": "Tools", "auth_type": "oauth2"}
            },
        }
    ]
    agent = builtin_agent(api, model, name=f"Signed {uuid.uuid4().hex[:6]}", graph=graph)
    marker = f"[signin-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.tool("whoami", {}), Turn.reply("You are **dora**.")], key=marker)
    assert dora

    page = sign_in(browser, daphne_server, "dora@signin.test")
    page.goto(f"{daphne_server.url}/tasks/new/")
    assert page.get_by_role("heading", name="Connect before you start").is_visible()
    create_task(page, agent["name"], f"{marker} Who am I?")
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]')?.textContent === 'paused'", timeout=20000
    )
    button = page.get_by_role("link", name="Sign in").first
    button.wait_for(timeout=10000)
    page.screenshot(path=str(SHOTS / "task-waiting-for-sign-in.png"), full_page=True)

    with page.context.expect_page() as opened:
        button.click()
    tab = opened.value
    tab.get_by_role("button", name="Continue to sign in").click()
    tab.wait_for_url(lambda url: url.startswith(f"{oauth_server.issuer}/consent"), timeout=20000)
    tab.get_by_label("User").fill("dora")
    tab.get_by_role("button", name="Allow").click()
    tab.wait_for_url(f"{daphne_server.url}/connections/")
    assert "Connected to Tools" in tab.content()
    tab.screenshot(path=str(SHOTS / "connections.png"), full_page=True)

    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]')?.textContent === 'completed'", timeout=30000
    )
    assert ("whoami", "dora") in oauth_server.calls
    assert page.locator(".markdown strong").first.text_content() == "dora"
    page.context.close()
