"""Real (no mocks) test servers on 127.0.0.1 for the agent runtime.

- `tests.tools.scripted_model`: an OpenAI-compatible chat-completions server replaying a script.
- `tests.tools.mcp_server`: a streamable-HTTP MCP server that checks bearer tokens.
- `tests.tools.file_server`: a static file server, plus tiny valid PNG/PDF/CSV payloads.
- `tests.tools.fixtures`: pytest fixtures for all three.
"""
