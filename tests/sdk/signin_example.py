"""The official xpander-sdk, unmodified, building an agent for an end user who has not connected an
OAuth MCP server: `Backend().aget_args(...)` asks get_token with generate_login_url=true, pushes the
login_required auth event, and polls until the user signs in (the test does it, as the user, in a
browser-like client); then it has the token. Prints the task id first, then one JSON report.

stdin: {"agent_id": ...}; environment: XPANDER_BASE_URL, XPANDER_API_KEY, XPANDER_ORGANIZATION_ID.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from xpander_sdk import Backend, Tasks, User


async def build(agent_id: str, task_id: str) -> dict:
    started = time.monotonic()
    args = await Backend().aget_args(agent_id=agent_id, task=Tasks().get(task_id))
    hidden = args.pop("_xpander_hidden_mcp_toolkits", [])
    for toolkit in hidden:
        await toolkit.close()
    return {
        "waited_seconds": round(time.monotonic() - started, 1),
        "tool_classes": [type(t).__name__ for t in args.get("tools") or []],
        "additional_context": args.get("additional_context"),
    }


def main() -> None:
    agent_id = json.loads(sys.stdin.read())["agent_id"]
    task = Tasks().create(
        agent_id,
        prompt="Who am I?",
        user_details=User(id="u-eve", email="eve@example.com"),
        events_streaming=True,
    )
    print(json.dumps({"task_id": task.id}), flush=True)
    print(json.dumps(asyncio.run(asyncio.wait_for(build(agent_id, task.id), 240))), flush=True)


if __name__ == "__main__":
    main()
