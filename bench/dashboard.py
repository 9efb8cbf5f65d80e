"""Dashboard benchmark on the embedded default (SQLite): /dashboard/ over a large history.

    .venv/bin/python bench/dashboard.py            # 100,000 tasks, all inside the default 7-day range
    .venv/bin/python bench/dashboard.py --quick    # 5,000 tasks

Tasks are written straight into a fresh database (bulk rows: 10 agents, 7 statuses, durations
spread 0.1-60 s, tokens, one tool-call activity entry per task, a tenth of them errors), then the
page is fetched through the real Django stack (test client, session, template) and timed:
the default range (7 days, per day), 24 hours per hour and 30 days; p50 / p95 over 30 requests each.
"""

from __future__ import annotations

import argparse
import json
import os
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


def bench(rows: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir}/db.sqlite3",
        VAR_DIR=str(workdir),
        SECRET_KEY="bench",
        DJANGO_SETTINGS_MODULE="console.settings",
    )
    from cryptography.fernet import Fernet

    os.environ["FIELD_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    from console.models import Agent, Membership, Organization
    from tasks_app.models import ActivityEntry, Task

    org = Organization.objects.create(name="Bench")
    user = get_user_model().objects.create_user("b@example.com", "b@example.com", "pw")
    Membership.objects.create(organization=org, user=user, role="owner")
    agents = [
        Agent.objects.create(organization=org, name=f"A{i}", unique_name=f"a{i}", framework="external")
        for i in range(10)
    ]
    statuses = ["completed"] * 6 + ["failed", "stopped", "error", "executing"]
    span = 6.9 * 24 * 3600  # inside the default 7-day range
    now = timezone.now()
    started = time.monotonic()
    tasks, entries = [], []
    for i in range(rows):
        task_id = str(uuid.UUID(int=i + 1))
        status = statuses[i % 10]
        tasks.append(
            Task(
                id=task_id,
                organization=org,
                agent=agents[i % 10],
                status=status,
                input_text=f"task {i}",
                created_at=now - timezone.timedelta(seconds=span * (rows - i) / rows),
                updated_at=now,
                tokens={"prompt_tokens": 100 + i % 50, "completion_tokens": 20 + i % 30},
                used_tools=["search"],
                duration=None if status == "executing" else 0.1 + (i * 7919 % 600) / 10,
            )
        )
        entries.append(
            ActivityEntry(
                task_id=task_id,
                position=1,
                kind="tool_call",
                data={"tool_name": f"tool{i % 12}", "is_error": i % 10 == 0},
            )
        )
        if len(tasks) == 5000:
            Task.objects.bulk_create(tasks)
            ActivityEntry.objects.bulk_create(entries)
            tasks, entries = [], []
    if tasks:
        Task.objects.bulk_create(tasks)
        ActivityEntry.objects.bulk_create(entries)
    setup_s = time.monotonic() - started
    client = Client()
    client.force_login(user)
    client.get("/dashboard/")  # warm: session organization, template compile

    def timed(url: str, n: int = 30) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(url)
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.status_code
        return out

    settings.CONSOLE_DASHBOARD_CACHE_SECONDS = 0  # every request computes every figure
    cold = timed("/dashboard/", 10)
    cold_hourly = timed("/dashboard/?range=24h", 10)
    settings.CONSOLE_DASHBOARD_CACHE_SECONDS = 30  # the default: figures reused for 30 s
    warm = timed("/dashboard/")
    return {
        "rows": rows,
        "setup_s": round(setup_s, 1),
        "cold_7d_p50_ms": round(statistics.median(cold), 1),
        "cold_7d_p95_ms": round(pct(cold, 95), 1),
        "cold_24h_hourly_p95_ms": round(pct(cold_hourly, 95), 1),
        "cached_7d_p50_ms": round(statistics.median(warm), 1),
        "cached_7d_p95_ms": round(pct(warm, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = {
        "time": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        **bench(5_000 if args.quick else 100_000),
    }
    print(json.dumps(result), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"dashboard{'-quick' if args.quick else ''}-latest.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
