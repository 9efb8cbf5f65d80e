"""Metrics reports are capped: the size of one report and how many a task keeps."""

from __future__ import annotations

from django.test import override_settings

from tasks_app.models import Task


def report(task_id: str, **extra):
    return {"execution_id": task_id, "status": "completed", "duration": 1, "ai_model": "m", **extra}


def test_a_task_keeps_only_its_newest_reports(alice, external_agent, task_of):
    task = task_of()
    url = f"/api/agents-metrics/{external_agent.id}/execution"
    with override_settings(METRICS_REPORTS_PER_TASK=3):
        for i in range(5):
            assert alice.post(url, report(task["id"], result=f"run {i}")).status_code == 200
    kept = Task.objects.get(pk=task["id"]).metrics["reports"]
    assert [r["result"] for r in kept] == ["run 2", "run 3", "run 4"]


def test_an_oversized_report_is_refused_and_not_stored(alice, external_agent, task_of):
    task = task_of()
    url = f"/api/agents-metrics/{external_agent.id}/execution"
    with override_settings(METRICS_REPORT_MAX_BYTES=1000):
        r = alice.post(url, report(task["id"], result="x" * 2000))
        assert alice.post(url, report(task["id"], result="small")).status_code == 200
    assert r.status_code == 413
    assert r.json()["detail"].startswith("Metrics report is ") and r.json()["limit"] == 1000
    assert [r["result"] for r in Task.objects.get(pk=task["id"]).metrics["reports"]] == ["small"]


def test_an_oversized_llm_response_in_a_report_is_refused(alice, external_agent):
    url = f"/api/agent-execution/{external_agent.id}/report_task"
    with override_settings(METRICS_REPORT_MAX_BYTES=1000):
        r = alice.post(url, {"input": "x", "result": "y", "llm_response": {"content": "z" * 2000}})
    assert r.status_code == 413 and r.json()["detail"].startswith("llm_response is ")
    assert not Task.objects.exists()
