"""Shared personas: alice owns org A, bob is her teammate (member), vera a viewer in A,
charlie owns org B. Each has an API key; `api` fixtures call the REST API as them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from console.models import Agent, ApiKey, Membership, Organization, Role

pytest_plugins = ["tests.tools.fixtures"]


@dataclass
class Persona:
    name: str
    org: Organization
    member: Membership
    key: str
    client: Client

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None, **headers: str):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        fn = getattr(self.client, method.lower())
        kwargs: dict[str, Any] = {"headers": {"x-api-key": self.key, **headers}}
        if data is not None:
            kwargs.update(data=data, content_type="application/json")
        return fn(path, **kwargs)

    def post(self, path: str, body: Any = None, **kw):
        return self.call("POST", path, body, **kw)

    def get(self, path: str, **kw):
        return self.call("GET", path, **kw)

    def patch(self, path: str, body: Any = None, **kw):
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw):
        return self.call("DELETE", path, **kw)


def make_persona(name: str, org: Organization, role: str) -> Persona:
    user = get_user_model().objects.create_user(username=f"{name}@example.com", email=f"{name}@example.com")
    member = Membership.objects.create(organization=org, user=user, role=role)
    _, raw = ApiKey.issue(member)
    return Persona(name, org, member, raw, Client())


@pytest.fixture(autouse=True)
def _loopback_test_servers_allowed(settings) -> None:
    """The scripted model, MCP and file servers listen on 127.0.0.1: allowed the documented way."""
    settings.OUTBOUND_ALLOWLIST = ["127.0.0.1"]


@pytest.fixture
def org_a(db) -> Organization:
    return Organization.objects.create(name="Acme")


@pytest.fixture
def org_b(db) -> Organization:
    return Organization.objects.create(name="Bravo")


@pytest.fixture
def alice(org_a) -> Persona:
    return make_persona("alice", org_a, Role.OWNER)


@pytest.fixture
def bob(org_a) -> Persona:
    return make_persona("bob", org_a, Role.MEMBER)


@pytest.fixture
def vera(org_a) -> Persona:
    return make_persona("vera", org_a, Role.VIEWER)


@pytest.fixture
def charlie(org_b) -> Persona:
    return make_persona("charlie", org_b, Role.OWNER)


@pytest.fixture
def external_agent(alice) -> Agent:
    """An agent run by the user's own code: its tasks wait as pending."""
    r = alice.post("/api/v1/agents", {"name": "Worker", "framework": "external", "instructions": "Be brief."})
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def create_body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    """The create body exactly as the official SDK sends it (xpander-wire.md 2.1)."""
    body = {
        "id": None,
        "input": {"text": text, "files": [], "user": None},
        "payload_extension": None,
        "source": None,
        "worker_id": None,
        "output_format": None,
        "output_schema": None,
        "run_locally": False,
        "events_streaming": True,
        "additional_context": None,
        "instructions_override": None,
        "test_run_node_id": None,
        "user_oidc_token": None,
        "expected_output": None,
        "mcp_servers": [],
        "triggering_agent_id": None,
        "title": None,
        "think_mode": "default",
        "disable_attachment_injection": False,
        "tool_call_limit": None,
        "user_tokens": None,
        "return_metrics": False,
        "llm_model_provider": None,
        "llm_model_name": None,
        "llm_reasoning_effort": None,
        "harness_cli": None,
        "permission_mode": None,
    }
    body.update(extra)
    return body


@pytest.fixture
def task_of(alice, external_agent):
    """Create a task on alice's external agent and return its JSON."""

    def make(text: str = "hello", **extra: Any) -> dict[str, Any]:
        r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body(text, **extra))
        assert r.status_code == 200, r.content
        return r.json()

    return make


@pytest.fixture(scope="session")
def daphne_server(tmp_path_factory):
    """One daphne server (embedded default) shared by the live tests of a session."""
    from tests.live import LiveServer, server_env

    workdir = tmp_path_factory.mktemp("live")
    server = LiveServer(workdir, server_env(workdir))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> Iterator[None]:
    """pytest-django's test database, whose other sessions end before it is dropped (PostgreSQL).

    The runtime's long-lived threads (the group writer, the followers' read threads, the request
    lanes) keep their connections for the life of the process; on PostgreSQL those sessions made
    the drop fail ("being accessed by other users") and left a test database on the server per run.
    An override of the same name, so the database is still made only for tests that use it.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(  # our own sessions only: DROP DATABASE deals with autovacuum itself
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename = current_user"
        )


def pytest_sessionfinish(session, exitstatus) -> None:
    """Django removes the file test database; its WAL side files and lock folder are ours to remove."""
    import glob
    import os
    import shutil
    import tempfile

    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"atc-test-{os.getpid()}.sqlite3-*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
