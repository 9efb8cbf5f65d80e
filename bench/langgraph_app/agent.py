"""The comparison target: a LangChain `create_agent` agent on the benchmark's scripted model.

Loaded by `langgraph dev` (langgraph.json: graph `agent`) and by inprocess.py (no server). It runs
in the LangGraph virtual environment (.cache/bench-langgraph/venv), never in the project's .venv.
The model's address comes from BENCH_MODEL_URL (the scripted model's port changes every run). One
trivial local tool is bound so the agent is a tool-calling agent like ours; the `plain` prompt does
not call it.
"""

from __future__ import annotations

import os

from langchain.agents import create_agent
from langchain_openai import ChatOpenAI


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def build_agent():  # the compiled graph's type lives in the other venv
    """A fresh agent on the scripted model (one ChatOpenAI, so one shared HTTP client)."""
    model = ChatOpenAI(
        model="scripted",
        base_url=os.environ.get("BENCH_MODEL_URL", "http://127.0.0.1:9/v1"),
        api_key="sk-bench-model",
        streaming=True,
        max_retries=2,
        timeout=120,
    )
    return create_agent(model, tools=[add], system_prompt="Answer briefly.")


graph = build_agent()
