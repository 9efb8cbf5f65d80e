"""Property-based fuzzing of the whole /api surface from its own OpenAPI document (schemathesis).

Every operation of the document, the SSE route included, gets generated requests (valid and
invalid) against a live daphne server; an answer fails the test if it is a 5xx, a status the
document does not list, a content type it does not declare, or a body that does not match the
declared schema. Tasks are never executed here (TASK_EXECUTION=none): fuzzed agents may name any
model URL, and test traffic stays on loopback. Bounded to run in CI in well under three minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from console.urls import api
from tests.live import LiveServer, server_env

pytestmark = pytest.mark.live

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per operation and generation mode: ~40 s for the 20 operations on 2 cores; raise it to hunt locally.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
READ_TIMEOUT = 10  # seconds; a stream of a task that never finishes must not hang the suite

schema = schemathesis.openapi.from_dict(api.get_openapi_schema())


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A server of its own: the fuzzer creates and deletes agents and tasks at random."""
    workdir = tmp_path_factory.mktemp("fuzz")
    server = LiveServer(workdir, server_env(workdir, TASK_EXECUTION="none", LOG_LEVEL="WARNING"))
    server.start()
    yield server
    server.stop()


@dataclass
class Fuzzed:
    """The fuzz organization's key and real rows, so generated requests also reach real objects."""

    key: str
    email: str
    agent_id: str
    task_id: str  # pending: updates, pushes and stops land on it (until the fuzzer stops it)
    finished_task_id: str  # its event stream closes at once; a pending task's would never end


@pytest.fixture(scope="module")
def fuzzed(fuzz_server) -> Fuzzed:
    email = "fuzz@example.com"
    account = fuzz_server.account("Fuzz Org", email)
    with fuzz_server.client(account) as client:
        agent = client.post("/v1/agents", json={"name": "Fuzzed", "framework": "external"})
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["id"]
        task = client.post(f"/agent-execution/{agent_id}", json={"input": {"text": "hi"}})
        assert task.status_code == 200, task.text
        done = client.post(f"/agent-execution/{agent_id}/report_task", json={"input": "x", "result": "y"})
        assert done.status_code == 200, done.text
    return Fuzzed(account.api_key, email, agent_id, task.json()["id"], done.json()["id"])


def real_ids(case: Case, fuzzed: Fuzzed) -> dict[str, str]:
    """The case's path parameters with the fuzz organization's real ids in their place."""
    path = case.operation.path
    real = {}
    for name in case.path_parameters or {}:
        if name == "agent_id" or (
            name == "id" and path == "/api/agent-execution/{id}" and case.method == "POST"
        ):
            real[name] = fuzzed.agent_id
        elif name == "task_id" and path.endswith("/events"):
            real[name] = fuzzed.finished_task_id
        elif name in {"id", "task_id"}:
            real[name] = fuzzed.task_id
        elif name == "user_id":
            real[name] = fuzzed.email
    return real


def test_it_serves_the_document_it_fuzzes(fuzz_server):
    r = httpx.get(f"{fuzz_server.api}/openapi.json", timeout=30)
    assert r.status_code == 200
    served = r.json()
    assert served["paths"].keys() == schema.raw_schema["paths"].keys()
    assert "/api/agent-execution/{task_id}/events" in served["paths"]
    assert served["components"]["securitySchemes"] == {
        "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key"}
    }


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every CI run; FUZZ_EXAMPLES explores further
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_documented(case, fuzz_server, fuzzed):
    """Each generated request is sent as generated, then again aimed at the organization's real rows."""
    for attempt in range(2):
        if attempt:
            real = real_ids(case, fuzzed)
            if not real:
                return
            case.path_parameters = {**case.path_parameters, **real}
        response = case.call(
            base_url=fuzz_server.url, headers={"x-api-key": fuzzed.key}, timeout=READ_TIMEOUT
        )
        case.validate_response(response, checks=CHECKS)
