"""Console benchmarks on the embedded default (one daphne process, SQLite, in-memory channel layer).

    .venv/bin/python bench/console.py            # both, full size (50 streaming tasks; 100,000 tasks)
    .venv/bin/python bench/console.py --quick    # a smoke run (10 tasks; 5,000 tasks)

1. ws:      event appended -> received on /ws/tasks/<id>/, with N tasks streaming at once. N external
   tasks each get a socket (a signed-in session, as a browser has); a pusher per task appends
   chunk events over the REST API; latency is the frame's arrival minus the event's stored `time`
   (the moment it was appended; same machine, same clock). p50 / p99 over every frame.
2. history: M tasks written straight into a fresh SQLite database (bulk rows, the benchmark's setup),
   then, through the real Django stack (test client, sessions, templates): the history page
   filtered by agent + status + text (p50 / p95), the first page unfiltered, and the CSV export's
   throughput in rows per second with the process's peak RSS before and after it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# ---- 1. websocket latency -------------------------------------------------------------------------


async def ws_frames(port: int, path: str, cookie: str, out: list[float], done: asyncio.Event) -> None:
    """A minimal websocket client (the server's frames are unmasked text): append latencies to `out`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
            f"Cookie: {cookie}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head
    while True:
        b0, b1 = await reader.readexactly(2)
        size = b1 & 0x7F
        if size == 126:
            size = int.from_bytes(await reader.readexactly(2))
        elif size == 127:
            size = int.from_bytes(await reader.readexactly(8))
        payload = await reader.readexactly(size)
        if b0 & 0x0F == 8:  # close
            break
        if b0 & 0x0F != 1:  # pings and pongs: not events
            continue
        now = time.time()
        event = json.loads(payload)
        if event["type"] == "chunk":
            stored = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
            out.append((now - stored) * 1000)
        if event["type"] == "task_finished":
            break
    writer.close()
    done.set()


def session_cookie(base: str, email: str, password: str) -> str:
    import httpx

    with httpx.Client(base_url=base) as http:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', http.get("/").text).group(1)
        r = http.post("/", data={"email": email, "password": password, "csrfmiddlewaretoken": token})
        assert r.status_code == 302, r.text[:300]
        return f"sessionid={http.cookies['sessionid']}"


async def bench_ws(tasks: int, events_per_task: int) -> dict:
    import httpx

    from tests.live import LiveServer, server_env

    workdir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    server = LiveServer(workdir, server_env(workdir))
    server.start()
    try:
        account = server.account("Bench", "bench@example.com")
        cookie = session_cookie(server.url, "bench@example.com", "pw-bench@example.com")
        async with httpx.AsyncClient(
            base_url=server.api, headers={"x-api-key": account.api_key}, timeout=60
        ) as api:
            agent = (await api.post("/v1/agents", json={"name": "Ext", "framework": "external"})).json()
            created = [
                (await api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"t{i}"}})).json()
                for i in range(tasks)
            ]
            latencies: list[float] = []
            dones = [asyncio.Event() for _ in created]
            readers = [
                asyncio.create_task(
                    ws_frames(server.port, f"/ws/tasks/{t['id']}/?since=1", cookie, latencies, d)
                )
                for t, d in zip(created, dones, strict=True)
            ]
            await asyncio.sleep(1.0)  # every socket open and subscribed

            async def stream(task_id: str) -> None:
                for i in range(events_per_task):
                    await api.post(
                        f"/agent-execution/{task_id}/events/push", json=[{"type": "chunk", "data": f"{i} "}]
                    )
                    await asyncio.sleep(0.05)  # a coalesced stream: one batch per 50 ms
                await api.patch(
                    f"/agent-execution/{task_id}/update", json={"status": "completed", "result": "ok"}
                )

            start = time.monotonic()
            await asyncio.gather(*(stream(t["id"]) for t in created))
            await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
            wall = time.monotonic() - start
        return {
            "tasks": tasks,
            "frames": len(latencies),
            "expected_frames": tasks * events_per_task,
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(pct(latencies, 99), 2),
            "max_ms": round(max(latencies), 2),
            "wall_s": round(wall, 2),
        }
    finally:
        server.stop()


# ---- 2. history and export on a large history ----------------------------------------------------


def bench_history(rows: int, database_url: str = "") -> dict:
    """`database_url`: run on that (empty, private) database instead of a fresh SQLite file."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    os.environ.update(
        DATABASE_URL=database_url or f"sqlite:///{workdir}/db.sqlite3",
        VAR_DIR=str(workdir),
        SECRET_KEY="bench",
        DJANGO_SETTINGS_MODULE="console.settings",
    )
    from cryptography.fernet import Fernet

    os.environ["FIELD_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    settings.ALLOWED_HOSTS = ["*"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from console.models import Agent, Membership, Organization
    from tasks_app.models import Task

    org = Organization.objects.create(name="Bench")
    user = get_user_model().objects.create_user("b@example.com", "b@example.com", "pw")
    Membership.objects.create(organization=org, user=user, role="owner")
    agents = [
        Agent.objects.create(organization=org, name=f"A{i}", unique_name=f"a{i}", framework="external")
        for i in range(10)
    ]
    words = [
        "invoice",
        "report",
        "summary",
        "customer",
        "refund",
        "ledger",
        "weather",
        "contract",
        "Zoë",
        "école",
    ]
    statuses = ["completed"] * 6 + ["failed", "stopped", "executing", "pending"]
    now = timezone.now()
    started = time.monotonic()
    batch = []
    for i in range(rows):
        batch.append(
            Task(
                id=str(uuid.UUID(int=i + 1)),
                organization=org,
                agent=agents[i % 10],
                status=statuses[i % 10],
                input_text=f"Please {words[i % 10]} item {i} for {words[(i * 7) % 10]}",
                result=f"Done: {words[(i * 3) % 10]} {i}",
                created_at=now - timezone.timedelta(seconds=rows - i),
                updated_at=now - timezone.timedelta(seconds=rows - i),
                tokens={"prompt_tokens": 10, "completion_tokens": 20},
                used_tools=["add"],
                duration=1.5,
            )
        )
        if len(batch) == 5000:
            Task.objects.bulk_create(batch)
            batch = []
    if batch:
        Task.objects.bulk_create(batch)
    from django.db import connection

    if connection.vendor == "postgresql":  # fresh statistics, as autovacuum keeps them on a live database
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tasks_app_task")
    setup_s = time.monotonic() - started
    client = Client()
    client.force_login(user)
    client.get("/tasks/")  # warm: session organization, template compile

    def timed(url: str, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(url)
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.status_code
        return out

    filtered = timed(f"/tasks/?agent={agents[3].id}&status=completed&q=ledger", 40)
    rare = timed(f"/tasks/?agent={agents[3].id}&status=failed&q=zo%C3%AB+ledger", 20)
    first = timed("/tasks/", 40)

    def rss_peak_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    before = rss_peak_kb()
    t0 = time.perf_counter()
    response = client.get("/tasks/export.csv")

    async def drain() -> int:
        count = 0
        async for part in response.streaming_content:
            count += part.count("\n") if isinstance(part, str) else part.count(b"\n")
        return count

    lines = asyncio.run(drain())
    export_s = time.perf_counter() - t0
    return {
        "rows": rows,
        "setup_s": round(setup_s, 1),
        "filtered_page_p50_ms": round(statistics.median(filtered), 1),
        "filtered_page_p95_ms": round(pct(filtered, 95), 1),
        "rare_filter_p95_ms": round(pct(rare, 95), 1),
        "first_page_p95_ms": round(pct(first, 95), 1),
        "export_rows": lines - 1,
        "export_rows_per_s": round((lines - 1) / export_s),
        "peak_rss_before_export_mb": round(before / 1024, 1),
        "peak_rss_after_export_mb": round(rss_peak_kb() / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["ws", "history"])
    parser.add_argument("--rows", type=int, default=None, help="history size (default 100,000; quick 5,000)")
    parser.add_argument("--postgres", action="store_true", help="history on a private PostgreSQL database")
    args = parser.parse_args()
    results = {"time": datetime.now(UTC).isoformat(), "quick": args.quick}
    if args.only in (None, "ws"):
        results["ws"] = asyncio.run(bench_ws(10 if args.quick else 50, 20 if args.quick else 60))
        print("ws", json.dumps(results["ws"]), flush=True)
    if args.only in (None, "history"):
        rows = args.rows or (5_000 if args.quick else 100_000)
        if args.postgres:  # a database of its own on the local server, dropped afterwards
            from tests.cluster import drop_postgres_database, private_postgres_database

            url, name = private_postgres_database()
            try:
                results["history"] = {"database": "postgresql", **bench_history(rows, url)}
            finally:
                from django.db import connections

                connections.close_all()
                drop_postgres_database(name)
        else:
            results["history"] = bench_history(rows)
        print("history", json.dumps(results["history"]), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"console{'-quick' if args.quick else ''}-latest.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
