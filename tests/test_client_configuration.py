"""Configuration: from the environment like the official SDK, or explicit."""

from __future__ import annotations

from tasks_app.client import Agents, Configuration, Tasks


def test_it_reads_the_environment(monkeypatch):
    monkeypatch.setenv("XPANDER_BASE_URL", "http://127.0.0.1:8000/api/")
    monkeypatch.setenv("XPANDER_API_KEY", "key-1")
    monkeypatch.setenv("XPANDER_ORGANIZATION_ID", "org-1")
    monkeypatch.setenv("XPANDER_AGENT_ID", "agent-1")
    cfg = Tasks().configuration
    assert (cfg.base_url, cfg.api_key, cfg.organization_id) == ("http://127.0.0.1:8000/api", "key-1", "org-1")
    assert Agents().configuration.agent_id == "agent-1"
    assert cfg.url("/agent-execution/t1/status") == "http://127.0.0.1:8000/api/agent-execution/t1/status"
    assert cfg.events_url("t1") == "http://127.0.0.1:8000/api/org-1/agent-execution/t1/events"


def test_explicit_values_win_and_urls_are_normalised(monkeypatch):
    monkeypatch.setenv("XPANDER_BASE_URL", "http://ignored.example")
    cfg = Configuration(base_url="tasks.example.com/api/", api_key="k")
    assert cfg.base_url == "https://tasks.example.com/api"  # no scheme: https, as upstream
    assert Tasks(cfg).configuration is cfg


def test_agent_controller_urls_carry_the_organization(monkeypatch):
    monkeypatch.delenv("XPANDER_ORGANIZATION_ID", raising=False)
    cfg = Configuration(base_url="http://127.0.0.1:9016", organization_id="org-9")
    assert cfg.url("agent-execution/t/status") == "http://127.0.0.1:9016/org-9/agent-execution/t/status"
    assert cfg.events_url("t") == "http://127.0.0.1:9016/org-9/agent-execution/t/events"
    assert Configuration(base_url="http://127.0.0.1:8765").events_url("t") == (
        "http://127.0.0.1:8765/agent-execution/t/events"
    )
