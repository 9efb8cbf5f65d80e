"""Shared setup for the tests/test_client_*.py files (no tests here).

Each test talks to the live daphne server through the client, and plays the external worker
itself over REST: it pushes events and finishes tasks, as a user's own worker code would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tasks_app.client import Configuration, Task
from tests.live import Account, LiveServer

ORG = "Client Org"


@dataclass
class Setup:
    server: LiveServer
    account: Account
    api: httpx.Client  # the worker's and the test's own raw view of the API
    agent: dict[str, Any]

    @property
    def configuration(self) -> Configuration:
        return Configuration(
            base_url=self.server.api,
            api_key=self.account.api_key,
            organization_id=self.account.organization_id,
        )

    def use_environment(self, monkeypatch) -> None:
        """Point a bare Tasks()/Agents() at the live server, as code written for the official SDK is."""
        monkeypatch.setenv("XPANDER_BASE_URL", self.server.api)
        monkeypatch.setenv("XPANDER_API_KEY", self.account.api_key)
        monkeypatch.setenv("XPANDER_ORGANIZATION_ID", self.account.organization_id)

    # the worker's side

    def push(self, task: Task | str, *events: tuple[str, Any]) -> None:
        task_id = task if isinstance(task, str) else task.id
        r = self.api.post(
            f"/agent-execution/{task_id}/events/push", json=[{"type": t, "data": d} for t, d in events]
        )
        assert r.status_code == 200, r.text

    def set_status(self, task: Task | str, status: str, result: str | None = None) -> dict[str, Any]:
        task_id = task if isinstance(task, str) else task.id
        body = {"status": status} | ({"result": result} if result is not None else {})
        r = self.api.patch(f"/agent-execution/{task_id}/update", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def finish(self, task: Task | str, result: str = "done") -> dict[str, Any]:
        return self.set_status(task, "completed", result)

    def raw(self, task: Task | str) -> dict[str, Any]:
        task_id = task if isinstance(task, str) else task.id
        r = self.api.get(f"/agent-execution/{task_id}/status")
        assert r.status_code == 200, r.text
        return r.json()


def make_setup(server: LiveServer, graph: list[dict[str, Any]] | None = None) -> Setup:
    account = server.account(ORG, "dev@client.test")
    api = server.client(account)
    body = {"name": f"External {uuid.uuid4().hex[:8]}", "framework": "external", "graph": graph or []}
    r = api.post("/v1/agents", json=body)
    assert r.status_code == 201, r.text
    return Setup(server, account, api, r.json())
