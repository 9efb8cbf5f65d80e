"""The runtime that executes built-in agents: a worker pool, the agent runner and its parts."""
