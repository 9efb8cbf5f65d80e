"""Data models of the wire contract (tasks, events, activity log, agents, media)."""
