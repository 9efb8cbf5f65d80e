"""POST /agent-execution/{agent_id}/report_task and /agents-metrics: tasks that ran elsewhere."""

from __future__ import annotations

from tasks_app.models import Task, TaskEvent

REPORT = {
    "id": None,
    "input": "Summarise Q3",
    "llm_response": {"choices": [{"message": {"content": "Q3 was fine."}}]},
    "tokens": {"completion_tokens": 12, "prompt_tokens": 30},
    "is_success": True,
    "result": None,
    "duration": 2.5,
    "used_tools": ["search"],
}


def test_it_lands_as_a_finished_task_with_activity(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", REPORT)
    assert r.status_code == 200, r.content
    task = r.json()
    assert task["status"] == "completed" and task["result"] == "Q3 was fine."
    assert (
        task["tokens"]["prompt_tokens"] == 30 and task["used_tools"] == ["search"] and task["duration"] == 2.5
    )
    assert [e.type for e in TaskEvent.objects.filter(task_id=task["id"])][-1] == "task_finished"
    log = alice.get(f"/api/activity/{external_agent.id}/{task['id']}").json()["messages"]
    assert [(m["role"], m["content"]["text"]) for m in log] == [
        ("user", "Summarise Q3"),
        ("agent", "Q3 was fine."),
    ]
    listed = alice.get(f"/api/agent-execution/executions/history/{external_agent.id}?status=completed").json()
    assert task["id"] in [t["id"] for t in listed]


def test_a_failed_report_is_failed_and_keeps_the_given_id(alice, external_agent):
    r = alice.post(
        f"/api/agent-execution/{external_agent.id}/report_task",
        {**REPORT, "id": "ext-run-1", "is_success": False, "result": "Timed out"},
    )
    assert r.status_code == 200
    assert r.json()["id"] == "ext-run-1" and r.json()["status"] == "failed"
    again = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", {**REPORT, "id": "ext-run-1"})
    assert again.status_code == 409


def test_it_finishes_a_pending_task_it_names(alice, external_agent, task_of):
    task = task_of("do it")
    r = alice.post(
        f"/api/agent-execution/{external_agent.id}/report_task",
        {**REPORT, "id": task["id"], "result": "Did it."},
    )
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert Task.objects.get(pk=task["id"]).result == "Did it."


def test_bad_reports_are_rejected(alice, charlie, vera, external_agent):
    url = f"/api/agent-execution/{external_agent.id}/report_task"
    assert alice.post(url, {**REPORT, "tokens": {"prompt_tokens": -1}}).status_code == 422
    assert alice.post(url, {**REPORT, "used_tools": "search"}).json()["field"] == "used_tools"
    assert alice.post(url, raw=b"{").status_code == 400
    assert charlie.post(url, REPORT).status_code == 404
    assert vera.post(url, REPORT).status_code == 403
    assert not Task.objects.exists()


def test_metrics_are_stored_against_the_task(alice, charlie, external_agent, task_of):
    task = task_of()
    body = {
        "execution_id": task["id"],
        "source": "sdk",
        "memory_thread_id": task["id"],
        "task": "hello",
        "status": "completed",
        "duration": 1.0,
        "ai_model": "gpt-4o",
        "result": "ok",
        "llm_tokens": {"worker": {"completion_tokens": 1, "prompt_tokens": 2}},
    }
    r = alice.post(f"/api/agents-metrics/{external_agent.id}/execution", body)
    assert r.status_code == 200
    assert Task.objects.get(pk=task["id"]).metrics["reports"][0]["ai_model"] == "gpt-4o"
    assert charlie.post(f"/api/agents-metrics/{external_agent.id}/execution", body).status_code == 404
    assert (
        alice.post(f"/api/agents-metrics/{external_agent.id}/execution", {"status": "x"}).status_code == 422
    )


def test_report_ids_are_plain_tokens(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", {**REPORT, "id": "a/b"})
    assert r.status_code == 422 and r.json()["field"] == "id"


def charlies_agent(charlie) -> str:
    r = charlie.post("/api/v1/agents", {"name": "Charlie's worker", "framework": "external"})
    assert r.status_code == 201, r.content
    return r.json()["id"]


def test_another_organizations_task_id_answers_as_an_unknown_id(alice, charlie, task_of):
    """No existence oracle: charlie cannot tell alice's task ids from ids that name nothing."""
    theirs = task_of("alice's secret task")["id"]
    unknown = "0b5cd5a6-8c3f-4a4e-9a0e-2a3b4c5d6e7f"
    url = f"/api/agent-execution/{charlies_agent(charlie)}/report_task"
    probe = charlie.post(url, {**REPORT, "id": theirs})
    control = charlie.post(url, {**REPORT, "id": unknown})
    assert (probe.status_code, control.status_code) == (404, 404)
    assert probe.content == control.content.replace(unknown.encode(), theirs.encode())
    assert probe.json() == {"detail": f"Task {theirs} not found"}
    task = Task.objects.get(pk=theirs)
    assert (task.status, task.result, task.organization_id) == ("pending", None, alice.org.id)
    assert not Task.objects.filter(organization_id=charlie.org.id).exists()


def test_another_organizations_reported_id_answers_as_not_found(alice, charlie, external_agent):
    mine = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", {**REPORT, "id": "ext-run-9"})
    assert mine.status_code == 200
    r = charlie.post(
        f"/api/agent-execution/{charlies_agent(charlie)}/report_task", {**REPORT, "id": "ext-run-9"}
    )
    assert r.status_code == 404 and r.json() == {"detail": "Task ext-run-9 not found"}
    assert Task.objects.get(pk="ext-run-9").organization_id == alice.org.id


def test_a_new_id_in_the_servers_form_is_refused(alice, external_agent):
    unknown = "0b5cd5a6-8c3f-4a4e-9a0e-2a3b4c5d6e7f"
    r = alice.post(f"/api/agent-execution/{external_agent.id}/report_task", {**REPORT, "id": unknown})
    assert r.status_code == 404 and r.json() == {"detail": f"Task {unknown} not found"}
    assert not Task.objects.exists()
