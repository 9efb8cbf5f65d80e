"""The client is a plain Python package: it imports without Django and without agno."""

from __future__ import annotations

import subprocess
import sys

from tests.live import ROOT


def test_it_imports_without_django_or_agno():
    code = (
        "import sys\n"
        "from tasks_app.client import Tasks, Task, Agents, User, AgentExecutionStatus\n"
        "from tasks_app.client.models.activity import AgentActivityThreadToolCall\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'agno', 'channels', 'ninja'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_statuses_compare_as_strings():
    from tasks_app.client import AgentExecutionStatus

    assert AgentExecutionStatus.Completed == "completed"
    assert [s.value for s in AgentExecutionStatus] == [
        "pending", "executing", "paused", "error", "failed", "completed", "stopped",
    ]  # fmt: skip
