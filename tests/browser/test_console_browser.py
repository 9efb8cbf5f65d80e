"""The console in a real browser: Debian's chromium driven by Playwright against a live daphne server
with the scripted model and the bearer-checking MCP server. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import csv
import io
import os
import uuid
from pathlib import Path

import httpx
import pytest

from tests.test_runtime_mcp import mcp_graph
from tests.test_runtime_run import builtin_agent
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = [pytest.mark.live, pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ORG = "Browser Org"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install -y chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def model():
    with ScriptedModel() as m:
        yield m


@pytest.fixture(scope="module")
def people(daphne_server):
    return {
        "alice": daphne_server.account(ORG, "alice@browser.test"),
        "bob": daphne_server.account(ORG, "bob@browser.test", role="member"),
        "charlie": daphne_server.account("Other Browser Org", "charlie@browser.test"),
    }


@pytest.fixture(scope="module")
def tools_agent(daphne_server, people, model, mcp_server_session):
    """A built-in agent on the scripted model with the bearer-checking MCP server in its graph."""
    api = daphne_server.client(people["alice"])
    agent = builtin_agent(
        api, model, name=f"Helper {uuid.uuid4().hex[:6]}", graph=mcp_graph(mcp_server_session.url)
    )
    # Alice's own MCP token goes to her vault once, through the API: her own key's task runs as her.
    marker = f"[seed-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("ok")], key=marker)
    seed = api.post(
        f"/agent-execution/{agent['id']}",
        json={
            "input": {"text": marker},
            "user_tokens": {"gi-tools": "tok-alice"},
        },
    )
    assert seed.status_code == 200, seed.text
    return agent


def sign_in(browser, server, email: str, *, width: int = 1280, height: int = 860):
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server.url}/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("pw-" + email)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/tasks/")
    return page


def create_task(page, agent_name: str, prompt: str) -> str:
    page.goto(page.url.split("/tasks/")[0] + "/tasks/new/")
    page.get_by_label("Agent").select_option(label=agent_name)
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name="Create task").click()
    page.wait_for_url("**/tasks/*/")
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def test_it_signs_in_from_the_root(browser, daphne_server, people, mcp_server_session):
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.goto(f"{daphne_server.url}/")
    page.screenshot(path=str(SHOTS / "sign-in.png"))
    page.get_by_label("Email").fill("alice@browser.test")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("Email or password is wrong.").is_visible()
    page.get_by_label("Password").fill("pw-alice@browser.test")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{daphne_server.url}/tasks/")
    assert page.get_by_role("heading", name="Tasks").is_visible()
    context.close()


def test_the_answer_streams_in_with_a_tool_card_and_a_teammate_sees_it_live(
    browser, daphne_server, people, model, tools_agent, mcp_server_session
):
    marker = f"[stream-{uuid.uuid4().hex[:6]}]"
    words = " ".join(f"word{i}" for i in range(40))
    model.set_script(
        [
            Turn.tool("whoami", {}),
            Turn.reply(f"**Hello** from the tools. {words}", chunks=40, delay_chunk=0.08),
        ],
        key=marker,
    )
    alice = sign_in(browser, daphne_server, "alice@browser.test")
    task_id = create_task(alice, tools_agent["name"], f"{marker} Who am I? Then say hello.")
    bob = sign_in(browser, daphne_server, "bob@browser.test")
    bob.goto(f"{daphne_server.url}/tasks/{task_id}/")
    # Streaming: part of the answer is on the page while the task still runs.
    alice.wait_for_function(
        "() => (document.querySelector('[data-streaming]')?.textContent || '').includes('word5')",
        timeout=20000,
    )
    assert alice.locator('[data-bind="status"]').text_content() == "executing"
    alice.screenshot(path=str(SHOTS / "task-streaming.png"), full_page=True)
    card = alice.locator("details.tool").first
    assert "whoami" in card.text_content() and card.get_attribute("data-state") == "completed"
    card.locator("summary").click()
    assert "alice" in card.locator('[data-slot="result"]').text_content()
    # Finished: Markdown rendered (sanitised, server-side), for both people, with the follow-up form.
    for page in (alice, bob):
        page.wait_for_selector(".markdown strong", timeout=20000)
        assert page.locator('[data-bind="status"]').text_content() == "completed"
        assert page.locator(".markdown").first.text_content().count("word39") == 1
        assert page.get_by_role("button", name="Send").is_visible()
    alice.screenshot(path=str(SHOTS / "task-finished.png"), full_page=True)
    assert "tok-alice" not in alice.content()
    alice.context.close()
    bob.context.close()


def test_a_long_task_is_stopped_from_the_page(browser, daphne_server, people, model, tools_agent):
    marker = f"[long-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("Thinking very slowly", chunks=2, hang=True)], key=marker)
    page = sign_in(browser, daphne_server, "bob@browser.test")
    create_task(page, tools_agent["name"], f"{marker} take your time")
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]')?.textContent === 'executing'"
    )
    page.get_by_role("button", name="Stop").click()
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]')?.textContent === 'stopped'", timeout=20000
    )
    page.wait_for_selector("#follow-up", timeout=10000)
    page.context.close()


def test_internal_status_is_saved_and_kept_after_a_reload(browser, daphne_server, people, model, tools_agent):
    marker = f"[status-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("Done.")], key=marker)
    page = sign_in(browser, daphne_server, "bob@browser.test")
    create_task(page, tools_agent["name"], f"{marker} quick one")
    field = page.get_by_label("Internal status")
    field.fill("awaiting review")
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("text=Saved.")
    page.reload()
    assert page.get_by_label("Internal status").input_value() == "awaiting review"
    assert "“none” → “awaiting review”" in page.locator("#internal-status").text_content()
    page.context.close()


def test_history_filters_by_text_and_status_and_exports_csv(
    browser, daphne_server, people, model, tools_agent
):
    marker = f"[hist-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("Filed.")], key=marker)
    page = sign_in(browser, daphne_server, "alice@browser.test")
    create_task(page, tools_agent["name"], f"{marker} Unicorn quarterly ledger")
    page.wait_for_selector(".markdown", timeout=20000)
    page.goto(f"{daphne_server.url}/tasks/")
    page.get_by_label("Text").fill("UNICORN ledger")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/tasks/?*q=UNICORN*")
    rows = page.locator("#results tbody tr[data-task]")
    assert rows.count() == 1 and "Unicorn quarterly ledger" in rows.first.text_content()
    page.get_by_label("Status:", exact=True).select_option(["failed"])
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=failed**")
    assert page.locator("#results tbody tr[data-task]").count() == 0
    page.get_by_label("Status:", exact=True).select_option(["completed"])
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=completed**")
    assert page.locator("#results tbody tr[data-task]").count() == 1
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["result"] == "Filed."
    page.goto(f"{daphne_server.url}/tasks/")
    page.screenshot(path=str(SHOTS / "history.png"), full_page=True)
    page.context.close()
    phone = sign_in(browser, daphne_server, "alice@browser.test", width=390, height=844)
    phone.screenshot(path=str(SHOTS / "history-phone.png"), full_page=False)
    phone.context.close()


def test_the_activity_review_opens_with_its_tool_summary(browser, daphne_server, people, model, tools_agent):
    marker = f"[act-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.tool("add", {"a": 2, "b": 3}), Turn.reply("It is 5.")], key=marker)
    page = sign_in(browser, daphne_server, "alice@browser.test")
    create_task(page, tools_agent["name"], f"{marker} add two and three")
    page.wait_for_selector(".markdown", timeout=20000)
    page.get_by_role("link", name="Activity review").click()
    page.wait_for_url("**/activity/")
    summary = page.locator(".summary-table tbody").text_content()
    assert "add" in summary
    assert page.locator('[data-kind="tool_call"]').count() == 1
    page.screenshot(path=str(SHOTS / "activity.png"), full_page=True)
    page.goto(f"{daphne_server.url}/tasks/new/")
    page.screenshot(path=str(SHOTS / "new-task.png"))
    page.context.close()


def test_an_outsider_gets_404_and_nothing_on_the_socket(browser, daphne_server, people, model, tools_agent):
    api = daphne_server.client(people["alice"])
    marker = f"[out-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("private answer")], key=marker)
    task = api.post(f"/agent-execution/{tools_agent['id']}", json={"input": {"text": marker}}).json()
    page = sign_in(browser, daphne_server, "charlie@browser.test")
    response = page.goto(f"{daphne_server.url}/tasks/{task['id']}/")
    assert response.status == 404 and "private answer" not in page.content()
    outcome = page.evaluate(
        """(id) => new Promise((resolve) => {
            const got = [];
            const ws = new WebSocket(`ws://${location.host}/ws/tasks/${id}/`);
            ws.onopen = () => got.push("open");
            ws.onmessage = (e) => got.push(e.data);
            ws.onclose = () => resolve(got);
            setTimeout(() => resolve(got.concat(["timeout"])), 5000);
        })""",
        task["id"],
    )
    assert outcome == []
    # and the same socket opens for a member of the organization
    assert httpx.get(f"{daphne_server.url}/tasks/{task['id']}/").status_code == 302
    page.context.close()


def test_the_history_updates_in_place_without_a_reload(browser, daphne_server, people, model, tools_agent):
    page = sign_in(browser, daphne_server, "alice@browser.test")
    page.evaluate("() => { window.loadedOnce = true; }")  # gone if the page reloads
    marker = f"[listed-{uuid.uuid4().hex[:6]}]"
    model.set_script([Turn.reply("Working on it", chunks=2, hang=True)], key=marker)
    api = daphne_server.client(people["bob"])
    created = api.post(
        f"/agent-execution/{tools_agent['id']}", json={"input": {"text": f"{marker} a new one"}}
    )
    assert created.status_code == 200, created.text
    task_id = created.json()["id"]
    row = f'#results tr[data-task="{task_id}"]'
    page.wait_for_selector(row, timeout=20000)  # a task created elsewhere appears
    page.wait_for_function(
        f"() => document.querySelector('{row} [data-field=\"status\"]')?.textContent === 'executing'",
        timeout=20000,
    )
    assert api.delete(f"/agent-execution/{task_id}").status_code == 200
    page.wait_for_function(
        f"() => document.querySelector('{row} [data-field=\"status\"]')?.textContent === 'stopped'",
        timeout=20000,
    )
    assert page.evaluate("() => window.loadedOnce === true")
    page.context.close()
