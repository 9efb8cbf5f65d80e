"""Per-agent run limits: the longest a built-in run may take (the agent's, else the server's)."""

from __future__ import annotations

from django.conf import settings

from console.models import Agent


def max_run_seconds(agent: Agent) -> float | None:
    """Seconds a run of `agent` may take; None: no limit (TASK_MAX_RUN_SECONDS 0, the default)."""
    value = (agent.settings or {}).get("max_run_seconds") or getattr(settings, "TASK_MAX_RUN_SECONDS", 0)
    return float(value) if value and value > 0 else None


def stopped_message(limit: float | None) -> str:
    return f"Stopped: the run passed the agent's maximum run time of {limit:g} seconds"
