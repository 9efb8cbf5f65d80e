"""An unmodified `@on_task` worker of the official SDK, run in the SDK's own venv by the tests.

What it does depends on the prompt: `sleep:<seconds>` sleeps first, `raise:<message>` raises.
Each handler start and end is appended as a JSON line to $WORKER_LOG, so tests see which process
ran which task and when, without touching the server.
"""

import asyncio
import json
import os
import time

from xpander_sdk import Task, on_task

LOG = os.environ["WORKER_LOG"]


def record(event: str, task: Task) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"event": event, "task": task.id, "pid": os.getpid(), "t": time.time()}) + "\n")


@on_task
async def handle(task: Task) -> Task:
    text = task.input.text or ""
    record("start", task)
    if text.startswith("sleep:"):
        await asyncio.sleep(float(text.split(":")[1]))
    if text.startswith("raise:"):
        record("end", task)
        raise RuntimeError(text.removeprefix("raise:"))
    task.result = f"echo: {text}"
    record("end", task)
    return task
