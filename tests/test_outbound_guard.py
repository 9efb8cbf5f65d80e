"""Admin-set outbound destinations (model base URLs, MCP servers) and fetched files go through one guard:
internal addresses are refused at save when literal and at every connect, unless OUTBOUND_ALLOWLIST
lists them. Refused hosts here are loopback forms other than the allowlisted 127.0.0.1."""

from __future__ import annotations

import ipaddress

import pytest

from console import egress, outbound
from tests.tools.file_server import FileServer

EMBEDDING_FORMS = [
    "::ffff:127.0.0.2",  # IPv4-mapped
    "::127.0.0.2",  # IPv4-compatible
    "::ffff:0:7f00:2",  # SIIT
    "64:ff9b::7f00:2",  # NAT64
    "2002:7f00:2::1",  # 6to4
]
REFUSED_URLS = [
    "http://127.0.0.2:8000/v1",
    "http://[::1]:11434/v1",
    "http://0x7f.0.0.2/v1",
    *(f"http://[{form}]/v1" for form in EMBEDDING_FORMS),
]


@pytest.mark.parametrize("form", EMBEDDING_FORMS)
def test_it_refuses_ipv6_forms_that_embed_a_loopback_ipv4(form):
    reason = egress.refusal(form, ipaddress.ip_address(form), egress.Allowlist.parse([]))
    assert reason and "127.0.0.2 embedded in IPv6" in reason and "OUTBOUND_ALLOWLIST" in reason


def test_it_allows_an_embedded_address_the_allowlist_names():
    allow = egress.Allowlist.parse(["127.0.0.0/8"])
    assert egress.refusal("x", ipaddress.ip_address("64:ff9b::7f00:2"), allow) is None


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_it_refuses_a_literal_internal_model_base_url_at_save(alice, url):
    r = alice.post("/api/v1/agents", {"name": "Local", "model_provider": "ollama", "model_base_url": url})
    assert r.status_code == 422, r.content
    assert r.json()["field"] == "model_base_url"
    assert "destination not allowed" in r.json()["detail"] and "OUTBOUND_ALLOWLIST" in r.json()["detail"]


def test_it_refuses_a_literal_internal_mcp_url_at_save_and_on_update(alice):
    graph = [{"id": "gi-1", "type": "mcp", "settings": {"mcp_settings": {"url": "http://127.0.0.2:9/mcp"}}}]
    r = alice.post("/api/v1/agents", {"name": "Tools", "graph": graph})
    assert r.status_code == 422 and r.json()["field"] == "graph[0].settings.mcp_settings.url"
    agent = alice.post("/api/v1/agents", {"name": "Tools"}).json()
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"graph": graph})
    assert r.status_code == 422 and "OUTBOUND_ALLOWLIST" in r.json()["detail"]
    r = alice.patch(f"/api/v1/agents/{agent['id']}", {"model_base_url": "http://[::ffff:127.0.0.2]/v1"})
    assert r.status_code == 422 and r.json()["field"] == "model_base_url"


def test_it_saves_allowlisted_addresses_and_host_names(alice, settings):
    graph = [{"id": "gi-1", "type": "mcp", "settings": {"mcp_settings": {"url": "http://127.0.0.1:9/mcp"}}}]
    body = {"name": "Local", "model_provider": "ollama", "model_base_url": "http://127.0.0.1:11434/v1"}
    assert alice.post("/api/v1/agents", {**body, "graph": graph}).status_code == 201
    body = {"name": "Named", "model_base_url": "https://models.example.com/v1"}  # checked when connecting
    assert alice.post("/api/v1/agents", body).status_code == 201
    settings.OUTBOUND_ALLOWLIST = ["127.0.0.0/8"]
    body = {"name": "Wide", "model_base_url": "http://127.0.0.2:8000/v1"}
    assert alice.post("/api/v1/agents", body).status_code == 201


async def test_the_guarded_client_never_connects_to_a_refused_address():
    with FileServer({"/x": b"inside"}, host="127.0.0.2") as inside:
        async with outbound.client() as client:
            with pytest.raises(outbound.OutboundRefused, match=r"127\.0\.0\.2 is a loopback address"):
                await client.get(inside.url("/x"))
            mapped = f"http://[::ffff:127.0.0.2]:{inside.port}/x"
            with pytest.raises(outbound.OutboundRefused, match="embedded in IPv6"):
                await client.get(mapped)
        assert inside.hits["/x"] == 0


async def test_a_host_name_is_checked_on_its_resolved_address_at_connect(settings):
    with FileServer({"/x": b"inside"}) as server:
        url = f"http://localhost:{server.port}/x"
        settings.OUTBOUND_ALLOWLIST = []
        async with outbound.client() as client:
            with pytest.raises(outbound.OutboundRefused, match=r"localhost resolves to .*OUTBOUND_ALLOWLIST"):
                await client.get(url)
            assert server.hits["/x"] == 0
            settings.OUTBOUND_ALLOWLIST = ["localhost"]
            assert (await client.get(url)).content == b"inside"


async def test_a_redirect_to_a_refused_address_is_refused_at_connect():
    with (
        FileServer({"/x": b"inside"}, host="127.0.0.2") as inside,
        FileServer({}) as outside,
    ):
        outside.add("/hop", b"", status=307, headers={"Location": inside.url("/x")})
        async with outbound.client(follow_redirects=True) as client:
            with pytest.raises(outbound.OutboundRefused, match=r"127\.0\.0\.2"):
                await client.get(outside.url("/hop"))
        assert outside.hits["/hop"] == 1 and inside.hits["/x"] == 0


async def test_an_allowlisted_cidr_lets_the_client_connect(settings):
    settings.OUTBOUND_ALLOWLIST = ["127.0.0.0/30"]
    with FileServer({"/x": b"inside"}, host="127.0.0.2") as inside:
        async with outbound.client() as client:
            assert (await client.get(inside.url("/x"))).content == b"inside"


def test_a_bad_allowlist_entry_stops_the_server_at_start(tmp_path):
    import os
    import subprocess
    import sys

    from tests.live import ROOT

    env = {**os.environ, "VAR_DIR": str(tmp_path), "OUTBOUND_ALLOWLIST": "127.0.0.1,127.0.0.0/33"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "OUTBOUND_ALLOWLIST: '127.0.0.0/33' is neither a host name nor a CIDR" in proc.stderr
