"""Bad input is a 4xx with a message that says what is wrong, never a 500 (and nothing is written)."""

from __future__ import annotations

import json

import pytest

from tasks_app.models import Task, TaskEvent
from tests.conftest import create_body


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def test_it_refuses_a_body_of_nothing_but_brackets(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", raw=b"[" * 100_000)
    assert r.status_code == 400
    assert "nested deeper than 64 levels" in r.json()["detail"]
    assert not Task.objects.exists()


def test_it_refuses_a_payload_extension_nested_990_deep(alice, external_agent):
    body = b'{"input": {"text": "x"}, "payload_extension": ' + deep(990) + b"}"
    r = alice.post(f"/api/agent-execution/{external_agent.id}", raw=body)
    assert r.status_code == 400
    assert r.json()["detail"].startswith("Malformed JSON body: payload_extension.a.a")
    assert not Task.objects.exists()


def test_it_takes_data_nested_up_to_the_limit(alice, external_agent):
    body = b'{"input": {"text": "x"}, "payload_extension": ' + deep(62) + b"}"
    r = alice.post(f"/api/agent-execution/{external_agent.id}", raw=body)
    assert r.status_code == 200, r.content


def test_it_refuses_pushed_data_nested_990_deep(alice, task_of):
    task = task_of()
    before = TaskEvent.objects.filter(task_id=task["id"]).count()
    body = b'[{"type": "chunk", "data": ' + b"[" * 990 + b"]" * 990 + b"}]"
    r = alice.post(f"/api/agent-execution/{task['id']}/events/push", raw=body)
    assert r.status_code == 400
    assert r.json()["field"] == "[0].data" + "[0]" * 62
    assert TaskEvent.objects.filter(task_id=task["id"]).count() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"input": {"text": "hi \\ud800 there"}}', "input.text"),
        (b'{"input": {"text": "x"}, "title": "\\udfff"}', "title"),
        (
            b'{"input": {"text": "x"}, "payload_extension": {"k": ["ok", "\\ud800"]}}',
            "payload_extension.k[1]",
        ),
        (b'{"input": {"text": "NUL \\u0000 inside"}}', "input.text"),
    ],
)
def test_it_refuses_text_that_cannot_be_stored(alice, external_agent, body, field):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", raw=body)
    assert r.status_code == 422
    assert r.json()["field"] == field
    assert "surrogate" in r.json()["detail"] or "NUL" in r.json()["detail"]
    assert not Task.objects.exists()


def test_it_refuses_a_lone_surrogate_in_a_key(alice, external_agent):
    body = b'{"input": {"text": "x"}, "payload_extension": {"\\ud800": 1}}'
    r = alice.post(f"/api/agent-execution/{external_agent.id}", raw=body)
    assert r.status_code == 422 and r.json()["field"] == "payload_extension"
    assert "a key contains a lone surrogate" in r.json()["detail"]


def test_it_refuses_a_lone_surrogate_in_the_internal_status(alice, task_of):
    task = task_of()
    r = alice.patch(f"/api/agent-execution/{task['id']}/update", raw=b'{"internal_status": "\\ud800"}')
    assert r.status_code == 422 and r.json()["field"] == "internal_status"
    assert Task.objects.get(pk=task["id"]).internal_status is None


def test_it_refuses_a_lone_surrogate_in_a_multipart_body_field(alice, external_agent):
    r = alice.client.post(
        f"/api/agent-execution/{external_agent.id}",
        {"body": '{"input": {"text": "\\ud800"}}'},
        headers={"x-api-key": alice.key},
    )
    assert r.status_code == 422 and r.json()["field"] == "input.text"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_it_refuses_non_finite_numbers_in_a_report(alice, external_agent, constant):
    body = b'{"input": "x", "duration": ' + constant + b"}"
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", raw=body)
    assert r.status_code == 400
    assert r.json()["detail"] == f"Malformed JSON body: {constant.decode()} is not a JSON number"
    assert not Task.objects.exists()


def test_it_refuses_non_finite_numbers_in_metrics(alice, external_agent, task_of):
    task = task_of()
    body = json.dumps({"execution_id": task["id"], "duration": float("inf")}).encode()
    r = alice.post(f"/api/agents-metrics/{external_agent.id}/execution", raw=body)
    assert r.status_code == 400 and "Infinity is not a JSON number" in r.json()["detail"]
    assert "reports" not in (Task.objects.get(pk=task["id"]).metrics or {})


@pytest.mark.parametrize("value", [False, "1.5", None])
def test_a_report_duration_must_be_a_number(alice, external_agent, value):
    body = {"input": "x", "duration": value}
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", body)
    if value is None:  # the SDK's Optional[float]: null means "not measured"
        assert r.status_code == 200, r.content
        return
    assert r.status_code == 422 and r.json()["field"] == "duration"


def test_a_report_takes_an_integer_duration_as_the_sdk_sends_its_default(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", {"input": "x", "duration": 0})
    assert r.status_code == 200, r.content


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration": False}, "duration"),
        ({"duration": "2"}, "duration"),
        ({"is_success": "yes"}, "is_success"),
        ({"is_success": 1}, "is_success"),
        ({"tokens": {"prompt_tokens": True}}, "tokens.prompt_tokens"),
        ({"tokens": {"prompt_tokens": 1.5}}, "tokens.prompt_tokens"),
    ],
)
def test_report_fields_are_not_coerced(alice, external_agent, body, field):
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", {"input": "x", **body})
    assert r.status_code == 422 and r.json()["field"] == field
    assert not Task.objects.exists()


def test_metrics_duration_must_be_a_number(alice, external_agent, task_of):
    task = task_of()
    url = f"/api/agents-metrics/{external_agent.id}/execution"
    r = alice.post(url, {"execution_id": task["id"], "duration": False})
    assert r.status_code == 422 and r.json()["field"] == "duration"
    assert alice.post(url, {"execution_id": task["id"], "duration": 0}).status_code == 200


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"return_metrics": 0}, "return_metrics"),
        ({"events_streaming": "true"}, "events_streaming"),
        ({"disable_attachment_injection": 1}, "disable_attachment_injection"),
        ({"tool_call_limit": 2.0}, "tool_call_limit"),
        ({"tool_call_limit": True}, "tool_call_limit"),
    ],
)
def test_create_fields_are_not_coerced(alice, external_agent, extra, field):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body(**extra))
    assert r.status_code == 422 and r.json()["field"] == field
    assert not Task.objects.exists()


def test_get_token_refuses_a_url_that_is_not_a_string(alice, external_agent):
    r = alice.post(f"/api/mcp_auth/{external_agent.id}/alice@example.com/get_token", {"url": 5})
    assert r.status_code == 422
    assert r.json() == {"detail": "url: Input should be a valid string", "field": "url"}


def test_an_empty_host_header_is_a_json_400(alice, external_agent):
    r = alice.client.get(
        f"/api/agent-execution/executions/history/{external_agent.id}",
        headers={"x-api-key": alice.key},
        HTTP_HOST="",
    )
    assert r.status_code == 400 and r["Content-Type"] == "application/json"
    assert r.json()["detail"].startswith("Bad request: Invalid HTTP_HOST header")


@pytest.mark.parametrize(
    "path",
    [
        "/api/agent-execution/executions/history/user/u%00x",
        "/api/agent-execution/executions/history/user/u?status=%00",
        "/api/agent-execution/executions/history/user/u?internal_status=a%00b",
    ],
)
def test_it_refuses_nul_in_the_url(alice, path):
    r = alice.get(path)
    assert r.status_code == 400
    assert r.json() == {"detail": "Bad request: NUL (%00) is not allowed in the URL"}


def test_a_percent_sign_in_a_filter_is_just_text(alice):
    r = alice.get("/api/agent-execution/executions/history/user/u?internal_status=%2500")
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize("value", [2.0, "5", True])
def test_an_agents_tool_call_limit_is_not_coerced(alice, value):
    r = alice.post("/api/v1/agents", {"name": "Strict", "framework": "external", "tool_call_limit": value})
    assert r.status_code == 422 and r.json()["field"] == "tool_call_limit"
