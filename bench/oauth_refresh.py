"""Refresh under load: N running tasks of one user whose OAuth token expires mid-run.

    .venv/bin/python bench/oauth_refresh.py              # 200 tasks, 2 worker processes
    .venv/bin/python bench/oauth_refresh.py --tasks 40 --workers 2

Everything is real and on loopback: a SQLite database file shared by separate `runworker`
processes, the authorization server + MCP server of tests/tools/oauth_server.py (issuing,
expiring and rotating tokens, checking the audience) and the scripted model. The member signs in
once (the OAuth flow of console/oauth.py). Each task calls `whoami`, then `hold` (which waits at a
gate), then `whoami` again, then answers. When every task is held, the benchmark expires every
access token at the authorization server and opens the gate: each task's next call gets a 401,
asks for a refresh, and the row lock lets exactly one refresh request through; the others use the
refreshed token. Reported: refresh requests the authorization server saw, task outcomes, the
calls made as the member, and the time from opening the gate to the last task finished.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _environment(workdir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "DATABASE_URL": f"sqlite:///{workdir}/db.sqlite3",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "OUTBOUND_ALLOWLIST": "127.0.0.1",
        "TASK_EXECUTION": "none",
        "WORKER_POLL_SECONDS": "0.2",
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "LOG_LEVEL": "WARNING",
    }


def _wait(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} did not happen in {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


def run(tasks: int, workers: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="oauth-bench-"))
    env = _environment(workdir)
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from console import oauth, vault
    from console.access import actor_for_membership
    from console.models import Agent, GraphItem, Membership, Organization
    from tasks_app import actions
    from tasks_app.models import TERMINAL_STATUSES, Task
    from tasks_app.schemas import TaskCreateIn
    from tests.tools.oauth_server import OAuthMCP
    from tests.tools.scripted_model import ScriptedModel, Turn

    call_command("migrate", verbosity=0)
    org = Organization.objects.create(name="Bench Org")
    user = get_user_model().objects.create_user(username="member@bench.test", email="member@bench.test")
    member = Membership.objects.create(organization=org, user=user, role="owner")
    procs: list[subprocess.Popen] = []
    with OAuthMCP() as server, ScriptedModel() as model:
        agent = Agent.objects.create(
            organization=org,
            name="Bench",
            unique_name="bench",
            model_provider="openai_compatible",
            model_name="scripted",
            model_base_url=model.base_url,
        )
        agent.set_model_api_key("sk-bench")
        agent.save()
        item = GraphItem.objects.create(
            agent=agent,
            key="gi-oauth",
            type="mcp",
            settings={"mcp_settings": {"url": server.mcp_url, "name": "Tools", "auth_type": "oauth2"}},
        )
        owner = vault.Owner(member_id=member.pk)
        redirect = "http://bench.test/connections/callback/"
        url = oauth.start(
            organization_id=org.id, owner=owner, item=item, redirect_uri=redirect, session_key="s"
        )
        callback = server.approve(url, "member")
        oauth.finish({k: v[-1] for k, v in parse_qs(urlsplit(callback).query).items()}, "s")

        actor = actor_for_membership(member)
        ids = []
        for n in range(tasks):
            marker = f"[t-{n:04d}]"
            model.set_script(
                [Turn.tool("whoami", {}), Turn.tool("hold", {}), Turn.tool("whoami", {}), Turn.reply("done")],
                key=marker,
            )
            ids.append(
                actions.create_task(
                    actor, agent.id, TaskCreateIn.model_validate({"input": {"text": marker}})
                ).id
            )
        server.gate.clear()
        worker_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        for w in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "manage.py"),
                        "runworker",
                        "--worker-id",
                        f"bench-{w}",
                        "--concurrency",
                        str(tasks),
                    ],
                    env=worker_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        try:
            ramp = _wait(
                lambda: sum(1 for c in server.calls if c[0] == "hold") >= tasks, 300, "every task held"
            )
            before = server.provider.refreshes
            server.provider.expire_all()
            server.gate.set()
            drain = _wait(
                lambda: Task.objects.filter(pk__in=ids).exclude(status__in=TERMINAL_STATUSES).count() == 0,
                300,
                "every task finished",
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        statuses: dict[str, int] = {}
        for status in Task.objects.filter(pk__in=ids).values_list("status", flat=True):
            statuses[status] = statuses.get(status, 0) + 1
        whoami = [c for c in server.calls if c[0] == "whoami"]
        return {
            "tasks": tasks,
            "worker_processes": workers,
            "refresh_requests_at_the_authorization_server": server.provider.refreshes - before,
            "statuses": statuses,
            "whoami_calls": len(whoami),
            "whoami_as_the_member": sum(1 for c in whoami if c[1] == "member"),
            "ramp_seconds": round(ramp, 2),
            "gate_to_last_finished_seconds": round(drain, 2),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = run(args.tasks, args.workers)
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "oauth-refresh-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = result["refresh_requests_at_the_authorization_server"] == 1 and result["statuses"] == {
        "completed": args.tasks
    }
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
