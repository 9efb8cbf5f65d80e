"""The runtime that executes built-in agents: a worker pool, the agent runner and its parts."""

# Imported by a run the first time it needs them: seconds of CPU with the loop blocked, long enough
# for the first runs' leases to lapse. A process that runs agents loads them before it serves
# (console.serve, the Celery worker, runworker), and then freezes them with the rest of its
# start-up (console/heap.py).
RUNTIME_IMPORTS = (
    "pydantic_ai",
    "pydantic_ai.mcp",
    "pydantic_ai.models.openai",
    "pydantic_ai.models.anthropic",
    "pydantic_ai.providers.openai",
    "pydantic_ai.providers.openai_compatible",
    "pydantic_ai.providers.anthropic",
)
