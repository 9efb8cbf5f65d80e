"""A task whose model or MCP server is not an allowed destination fails saying so (naming
OUTBOUND_ALLOWLIST), the refused host is never contacted, and remote error bodies stay out of results."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.test_runtime_mcp import mcp_graph, start
from tests.test_runtime_run import builtin_agent, sse
from tests.tools.file_server import FileServer
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


class Redirector:
    """An allowed (127.0.0.1) endpoint that answers every POST with a 307 to `target`."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(307)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_model_redirect_to_a_refused_address_fails_at_connect(daphne_server):
    alice = daphne_server.account("Egress Org", "alice@egress.test")
    api = daphne_server.client(alice)
    with FileServer({}, host="127.0.0.2") as inside:
        hop = Redirector(inside.base_url)
        try:
            agent = builtin_agent(api, hop)  # saved: 127.0.0.1 is allowlisted; the redirect is not
            task = start(api, agent, "[egress] go")
            final = sse(daphne_server, alice, task["id"])[-1]["data"]
        finally:
            hop.close()
        assert inside.requests == []
    assert final["status"] == "failed"
    assert "destination not allowed: 127.0.0.2 is a loopback address" in final["result"]
    assert "OUTBOUND_ALLOWLIST" in final["result"]


def test_an_mcp_url_stored_before_the_guard_is_refused_when_the_task_runs(daphne_server):
    alice = daphne_server.account("Egress Org", "alice@egress.test")
    api = daphne_server.client(alice)
    marker = f"[mcp-egress-{uuid.uuid4().hex[:6]}]"
    with (
        FileServer({}, host="127.0.0.2") as inside,
        ScriptedModel(scripts={marker: [Turn.reply("x")]}) as model,
    ):
        agent = builtin_agent(api, model, graph=mcp_graph("http://127.0.0.1:9/mcp", "none"))
        url = inside.url("/mcp")
        # A row written before save-time checks existed (or by hand): the run still refuses it.
        daphne_server.manage(
            "shell",
            "-c",
            "from console.models import GraphItem; "
            f"GraphItem.objects.filter(agent_id={agent['id']!r}).update("
            f"settings={{'mcp_settings': {{'url': {url!r}, 'name': 'Inside'}}}})",
        )
        task = start(api, agent, f"{marker} go")
        final = sse(daphne_server, alice, task["id"])[-1]["data"]
        assert inside.requests == [] and model.requests == []
    assert final["status"] == "failed"
    assert f"MCP server Inside ({url}): destination not allowed" in final["result"]
    assert "OUTBOUND_ALLOWLIST" in final["result"]


def test_a_model_error_body_is_not_echoed_in_the_result(daphne_server):
    alice = daphne_server.account("Egress Org", "alice@egress.test")
    api = daphne_server.client(alice)
    marker = f"[body-{uuid.uuid4().hex[:6]}]"
    page = "<title>Jenkins dashboard</title> build 1234 on intranet"
    with ScriptedModel(scripts={marker: [Turn.error(400, page, type="invalid_request_error")]}) as model:
        agent = builtin_agent(api, model)
        task = start(api, agent, f"{marker} go")
        events = sse(daphne_server, alice, task["id"])
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "answered HTTP 400" in final["result"] and "invalid_request_error" in final["result"]
    assert "Jenkins" not in final["result"]
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    assert "Jenkins" not in str(log)
