"""Pytest fixtures for the test servers of `tests.tools`.

Use them from a test module with (ruff-clean, unlike importing the fixture names)::

    pytest_plugins = ["tests.tools.fixtures"]

or for every module at once with the same line in `tests/conftest.py`.

- `scripted_model` -> a started `ScriptedModel` with no script (fresh per test): call
  `scripted_model.set_script([...])` / `set_script([...], key="[conv-1]")`, then point the runtime at
  `scripted_model.base_url` (or use `scripted_model.chat_model()` with pydantic-ai).
- `mcp_server` -> the session's `AuthMCPServer` (started once), with its records cleared and its
  tokens reset to `MCP_TOKENS` for each test: `{"tok-alice": "alice", "tok-bob": "bob"}`.
- `file_server` -> a started `FileServer` (fresh per test) serving `/tiny.png`, `/report.pdf`
  (text `REPORT_TEXT`), `/data.csv` and `/notes.txt`; `file_server.add(...)` serves more.

All servers listen on 127.0.0.1 on free ports and run in background threads, so they work from sync
and async tests alike, and from subprocesses the test starts (a live daphne server, a worker).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tools.file_server import FileServer, sample_csv, sample_txt, small_pdf, tiny_png
from tests.tools.mcp_server import AuthMCPServer
from tests.tools.scripted_model import ScriptedModel

__all__ = [
    "MCP_TOKENS",
    "REPORT_TEXT",
    "file_server",
    "mcp_server",
    "mcp_server_session",
    "scripted_model",
]

MCP_TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
REPORT_TEXT = "Quarterly revenue was 42 million."


@pytest.fixture
def scripted_model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as model:
        yield model


@pytest.fixture(scope="session")
def mcp_server_session() -> Iterator[AuthMCPServer]:
    with AuthMCPServer(MCP_TOKENS) as server:
        yield server


@pytest.fixture
def mcp_server(mcp_server_session: AuthMCPServer) -> Iterator[AuthMCPServer]:
    server = mcp_server_session
    server.set_users(MCP_TOKENS)
    server.reset()
    yield server


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    files = {
        "/tiny.png": tiny_png(),
        "/report.pdf": small_pdf(REPORT_TEXT),
        "/data.csv": sample_csv(),
        "/notes.txt": sample_txt(),
    }
    with FileServer(files) as server:
        yield server
