"""A task's files reach the model: images as images, PDFs as text for a model without PDF input,
readable files inlined, other files by URL with a note; a file that cannot be fetched fails clearly."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.test_runtime_run import builtin_agent, sse
from tests.tools.fixtures import REPORT_TEXT
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def test_files_are_sorted_and_composed_like_to_message(daphne_server, file_server):
    alice = daphne_server.account("Files Org", "alice@files.test")
    api = daphne_server.client(alice)
    marker = f"[files-{uuid.uuid4().hex[:6]}]"
    urls = [file_server.url(p) for p in ("/tiny.png", "/report.pdf", "/data.csv", "/notes.txt")]
    urls.append("https://example.com/archive.zip")
    with ScriptedModel(scripts={marker: [Turn.reply("Seen.")]}) as model:
        agent = builtin_agent(api, model)
        task = api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"{marker} read these", "files": urls}, "events_streaming": True},
        ).json()
        events = sse(daphne_server, alice, task["id"])
        body = model.requests[0].body
    assert events[-1]["data"]["status"] == "completed", events[-1]["data"]["result"]
    user = [m for m in body["messages"] if m["role"] == "user"][-1]
    parts = (
        user["content"] if isinstance(user["content"], list) else [{"type": "text", "text": user["content"]}]
    )
    text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
    assert text.startswith(f"{marker} read these\nFiles: {urls[0]}, ")
    assert "\nFiles contents:\n" in text
    assert json.dumps({"url": urls[2], "content": "name,qty,price\nwidget,3,2.50\ngadget,1,10.00\n"}) in text
    assert REPORT_TEXT in text  # the PDF's text: this model takes no PDF documents
    assert "caf\\u00e9" in text
    assert "\nAttachment notes:\n- https://example.com/archive.zip" in text
    assert any(p["type"] == "image_url" for p in parts)


def test_a_file_that_cannot_be_fetched_fails_the_task(daphne_server, file_server):
    alice = daphne_server.account("Files Org", "alice@files.test")
    api = daphne_server.client(alice)
    marker = f"[nofile-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("unused")]}) as model:
        agent = builtin_agent(api, model)
        task = api.post(
            f"/agent-execution/{agent['id']}",
            json={
                "input": {"text": marker, "files": [file_server.url("/missing.csv")]},
                "events_streaming": True,
            },
        ).json()
        events = sse(daphne_server, alice, task["id"])
        assert model.requests == []
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "/missing.csv: the server answered 404" in final["result"]


def test_private_addresses_are_refused_unless_allowlisted(daphne_server):
    alice = daphne_server.account("Files Org", "alice@files.test")
    api = daphne_server.client(alice)
    marker = f"[ssrf-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("unused")]}) as model:
        agent = builtin_agent(api, model)
        task = api.post(
            f"/agent-execution/{agent['id']}",
            json={
                "input": {"text": marker, "files": ["http://127.0.0.2:9/secret.txt"]},
                "events_streaming": True,
            },
        ).json()
        events = sse(daphne_server, alice, task["id"])
    result = events[-1]["data"]["result"]
    assert "destination not allowed: 127.0.0.2 is a loopback address" in result
    assert "OUTBOUND_ALLOWLIST" in result


def test_files_uploaded_with_the_task_reach_the_model(daphne_server):
    alice = daphne_server.account("Files Org", "alice@files.test")
    api = daphne_server.client(alice)
    marker = f"[up-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("Got it.")]}) as model:
        agent = builtin_agent(api, model)
        body = json.dumps({"input": {"text": f"{marker} see attached"}, "events_streaming": True})
        r = api.post(
            f"/agent-execution/{agent['id']}",
            data={"body": body},
            files=[("files", ("sales data.csv", b"region,total\nnorth,7\n", "text/csv"))],
        )
        assert r.status_code == 200, r.text
        task = r.json()
        events = sse(daphne_server, alice, task["id"])
        text = json.dumps(model.requests[0].body)
    assert events[-1]["data"]["status"] == "completed", events[-1]["data"]["result"]
    url = task["input"]["files"][0]
    assert "/files/" in url and url.endswith("/sales_data.csv")
    assert "region,total" in text
    assert f"Files: {url}" in text  # the link the model is given is the one that serves the file
    served = httpx.get(url)
    assert served.status_code == 200 and served.content == b"region,total\nnorth,7\n"
    assert served.headers["content-disposition"].startswith("attachment;")
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert served.headers["x-content-type-options"] == "nosniff"


def test_a_bad_upload_writes_nothing(daphne_server):
    alice = daphne_server.account("Files Org", "alice@files.test")
    api = daphne_server.client(alice)
    agent = api.post("/v1/agents", json={"name": f"u {uuid.uuid4().hex[:6]}", "framework": "external"}).json()
    media = daphne_server.workdir / "media" / "tasks"
    before = sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []
    r = api.post(
        f"/agent-execution/{agent['id']}", data={"body": "{nope"}, files=[("files", ("a.txt", b"x"))]
    )
    assert r.status_code == 400
    r = api.post(
        f"/agent-execution/{agent['id']}",
        data={"body": json.dumps({"input": {"text": "x" * 300_000}})},
        files=[("files", ("a.txt", b"x"))],
    )
    assert r.status_code == 413
    after = sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []
    assert before == after


async def test_fetch_pins_and_rechecks_every_redirect(file_server, settings):
    from tasks_app.runtime import files

    file_server.add("/hop", b"", status=302, headers={"Location": "http://127.0.0.2:9/secret"})
    with pytest.raises(files.FetchRefused, match=r"destination not allowed: 127\.0\.0\.2"):
        await files.fetch(file_server.url("/hop"))
    fetched = await files.fetch(file_server.url("/data.csv"))
    assert fetched.content.startswith(b"name,qty")
    settings.OUTBOUND_ALLOWLIST = []
    with pytest.raises(files.FetchRefused, match="loopback address; add it to OUTBOUND_ALLOWLIST"):
        await files.fetch(file_server.url("/data.csv"))
