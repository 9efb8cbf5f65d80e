"""The official xpander-sdk's get_args for an end user with no token, end to end against our server
(xpander-wire.md section 6): it receives login_required with a signed sign-in link, pushes the auth
event, polls; the end user follows the link without a console session and signs in at the real
authorization server; the SDK's next poll gets token_ready and builds the agent with the MCP tools."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from tests.test_sdk_agno import KEPT_ENV, SCRIPTS, sdk_python  # noqa: F401
from tests.tools.oauth_server import OAuthMCP

pytestmark = [pytest.mark.sdk, pytest.mark.live, pytest.mark.timeout(600)]


def login_url(api: httpx.Client, agent_id: str, task_id: str, timeout: float = 60) -> str:
    """The sign-in link of the login_required auth event the SDK pushed, read from the activity log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"/activity/{agent_id}/{task_id}")
        if r.status_code == 200:
            for entry in r.json().get("messages") or []:
                if entry.get("type") == "login_required":
                    return entry["data"]["url"]
        time.sleep(0.5)
    raise TimeoutError("the SDK pushed no login_required auth event")


def sign_in_as_end_user(link: str, oauth: OAuthMCP, user: str) -> httpx.Response:
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        page = browser.get(link)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        started = browser.post(link, data={"csrfmiddlewaretoken": csrf}, headers={"Referer": link})
        authorize = html.unescape(re.search(r'id="continue" href="([^"]+)"', started.text).group(1))
        callback = oauth.approve(authorize, user)
        base = f"{urlsplit(link).scheme}://{urlsplit(link).netloc}"
        parts = urlsplit(callback)
        return browser.get(f"{base}{parts.path}?{parts.query}")


def test_get_args_waits_for_the_end_users_sign_in_then_has_the_token(daphne_server, sdk_python):  # noqa: F811
    owner = daphne_server.account("SDK Sign-in Org", "owner@sdksignin.test")
    # The SDK's stderr goes to a file read at the end: a pipe could fill up and block it.
    with OAuthMCP() as oauth, daphne_server.client(owner) as api, tempfile.TemporaryFile(mode="w+") as errors:
        graph = [
            {
                "id": "gi-oauth",
                "type": "mcp",
                "name": "Tools",
                "settings": {
                    "mcp_settings": {
                        "url": oauth.mcp_url,
                        "transport": "streamable-http",
                        "auth_type": "oauth2",
                    }
                },
            }
        ]
        r = api.post(
            "/v1/agents",
            json={"name": f"SDK {uuid.uuid4().hex[:6]}", "framework": "external", "graph": graph},
        )
        assert r.status_code == 201, r.text
        agent_id = r.json()["id"]
        environ = {k: v for k, v in os.environ.items() if k in KEPT_ENV}
        environ.update(
            XPANDER_BASE_URL=daphne_server.api,
            XPANDER_API_KEY=owner.api_key,
            XPANDER_ORGANIZATION_ID=owner.organization_id,
        )
        script = subprocess.Popen(
            [str(sdk_python), str(SCRIPTS / "signin_example.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=environ,
            text=True,
        )
        script.stdin.write(json.dumps({"agent_id": agent_id}))
        script.stdin.close()
        task_id = json.loads(script.stdout.readline())["task_id"]
        link = login_url(api, agent_id, task_id)
        assert "/connections/signin/" in link
        done = sign_in_as_end_user(link, oauth, "eve")
        assert done.status_code == 200 and "Connected to Tools" in done.text
        script.wait(timeout=120)
        errors.seek(0)
        assert script.returncode == 0, errors.read()[-4000:]
        built = json.loads(script.stdout.read().strip().splitlines()[-1])
        activity = api.get(f"/activity/{agent_id}/{task_id}").json()["messages"]
    assert "MCPTools" in built["tool_classes"], built
    assert "Unavailable tools" not in (built["additional_context"] or ""), built
    kinds = [m.get("type") for m in activity if m.get("type") in ("login_required", "token_ready")]
    assert kinds == ["login_required", "token_ready"]
    assert all(
        m["data"].get("access_token") in (None, "REDACTED")
        for m in activity
        if m.get("type") == "token_ready"
    )
