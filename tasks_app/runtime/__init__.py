"""The runtime that executes built-in agents: a worker pool, the agent runner and its parts."""

# Imported by a run the first time it needs them: seconds of CPU with the loop blocked, long enough
# for the first runs' leases to lapse. A process that runs agents loads them before it serves
# (console.serve, the Celery worker, runworker), and then freezes them with the rest of its
# start-up (console/heap.py). RUNTIME_IMPORTS is the default provider's path (OpenAI and the
# OpenAI-compatible endpoints, ~2 s); OTHER_PROVIDER_IMPORTS (Anthropic's SDK, ~2 s more) is loaded
# by the workers too, while the web server leaves it to the first run that needs it and starts
# that much sooner (`make run`, and every live server of the test suite).
RUNTIME_IMPORTS = (
    "pydantic_ai",
    "pydantic_ai.mcp",
    "pydantic_ai.models.openai",
    "pydantic_ai.providers.openai",
    "pydantic_ai.providers.openai_compatible",
)
OTHER_PROVIDER_IMPORTS = (
    "pydantic_ai.models.anthropic",
    "pydantic_ai.providers.anthropic",
)
WORKER_IMPORTS = RUNTIME_IMPORTS + OTHER_PROVIDER_IMPORTS
