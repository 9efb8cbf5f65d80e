"""The client distribution's own tests: run in a venv holding only this distribution (with its
`agno` extra) and pytest, against a server named by XPANDER_BASE_URL / XPANDER_API_KEY /
XPANDER_ORGANIZATION_ID, with CLIENT_TEST_AGENT_ID (an external agent) and CLIENT_TEST_MODEL_AGENT_ID
(an agent whose model endpoint answers "hello from the script"). Without them the server tests skip.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest

needs_server = pytest.mark.skipif(
    not os.environ.get("CLIENT_TEST_AGENT_ID"), reason="no server given (CLIENT_TEST_AGENT_ID unset)"
)


def test_it_is_the_installed_copy_without_the_server():
    import tasks_app.client

    assert Path(tasks_app.client.__file__).is_relative_to(Path(sys.prefix))  # not a checkout on sys.path
    for server_part in ("django", "ninja", "channels", "pydantic_ai", "tasks_app.actions"):
        assert importlib.util.find_spec(server_part) is None, server_part


def test_it_has_agno_and_the_mcp_client_agno_needs_beside_it():
    from importlib.metadata import version

    assert version("agno")
    assert version("mcp").split(".")[0] == "1"  # the server needs mcp 2: they could not share a venv


@needs_server
def test_it_creates_reads_and_stops_a_task():
    from tasks_app.client import AgentExecutionStatus, Tasks

    tasks = Tasks()
    task = tasks.create(agent_id=os.environ["CLIENT_TEST_AGENT_ID"], prompt="from the installed client")
    assert task.status == AgentExecutionStatus.Pending
    assert tasks.get(task.id).input.text == "from the installed client"
    task.stop()
    assert tasks.get(task.id).status == AgentExecutionStatus.Stopped


@needs_server
def test_it_builds_an_agno_agent_that_answers():
    from agno.agent import Agent

    from tasks_app.client import Backend

    args = Backend().get_args(agent_id=os.environ["CLIENT_TEST_MODEL_AGENT_ID"])
    run = asyncio.run(Agent(**args).arun(input="Say hello"))
    assert run.content == "hello from the script"
