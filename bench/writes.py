"""The task API's writes of one agent run, in-process: CPU per run of create, claim, progress, finish.

    .venv/bin/python bench/writes.py                  # 300 runs, three rounds, median and range
    .venv/bin/python bench/writes.py --runs 1000 --rounds 5

Why: a run's writes go through the ORM on the request's thread (the create) and on the runtime's
group writer (claim, progress, finish). In the server their cost is mixed with HTTP, the event loop
and the model; here each is timed alone on one thread (`time.process_time`), on a fresh SQLite file
database as the embedded default uses, so a change to a write shows as a change of milliseconds
that the host's noise does not bury. The calls are the task API's own (`tasks_app.actions`), each
in a transaction as the group writer runs it, with a running event loop bound for the channel-layer
publish as in the server. Nothing else of the server runs: no HTTP, no model, no worker pool.

`--seat`: the create claims its task itself, as with the embedded pool running (dispatch.take_seat:
an executor here that sets a slot aside and starts nothing), so the claim step is part of the create.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = ("create", "claim", "progress", "finish")


def setup() -> tuple[object, str]:
    """A migrated SQLite database of its own, an organization with a builtin agent; (actor, agent id)."""
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='bench-writes-')}/db.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from console.access import SYSTEM, Actor
    from console.models import Agent, Organization
    from tasks_app import bus

    loop = asyncio.new_event_loop()  # publishes go to a running loop, as from the server's threads
    threading.Thread(target=loop.run_forever, daemon=True).start()
    while not loop.is_running():
        time.sleep(0.01)
    bus.bind_loop(loop)
    org = Organization.objects.create(name="Bench writes")
    agent = Agent.objects.create(organization=org, name="Writes", framework="builtin")
    return Actor(organization_id=org.id, role=SYSTEM), agent.id


class BenchSeats:
    """An executor that always has a slot and runs nothing: the create's own claim, measured alone."""

    worker_id = "bench-worker"
    lease_seconds = 60.0

    def submit(self, task_id: str) -> None:
        pass

    def cancel(self, task_id: str) -> None:
        pass

    def take_seat(self) -> BenchSeats:
        return self

    def start(self, task: object) -> None:
        pass

    def give_back(self) -> None:
        pass


def one_run(actor: object, agent_id: str, times: dict[str, float], i: int, seat: bool = False) -> None:
    """The writes of one run, as the runtime makes them: each step's CPU added to `times`."""
    from django.db import transaction

    from tasks_app import actions
    from tasks_app.actions.log import _OUTBOX
    from tasks_app.schemas import TaskCreateIn

    t0 = time.process_time()
    body = TaskCreateIn.model_validate({"input": {"text": f"What is 2 + {i}?"}, "events_streaming": True})
    task = actions.create_task(actor, agent_id, body)  # dispatches on commit: no pool runs here
    t1 = time.process_time()
    token = _OUTBOX.set([])  # the group writer collects the events to publish after its commit
    try:
        if not seat:
            with transaction.atomic():
                actions.claim_task(task.id, "bench-worker", 60)
        t2 = time.process_time()
        with transaction.atomic():
            actions.record_progress(
                task.id, events=[("chunk", "The answer ")], secrets=[], worker_id="bench-worker"
            )
        t3 = time.process_time()
        with transaction.atomic():
            actions.finish_task(
                task.id,
                "completed",
                "The answer is 5.",
                worker_id="bench-worker",
                events=[("chunk", "is 5.")],
                secrets=[],
                tokens={"prompt_tokens": 20, "completion_tokens": 5},
                final_message="The answer is 5.",
            )
        t4 = time.process_time()
    finally:
        _OUTBOX.reset(token)
    for step, dt in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
        times[step] += dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seat", action="store_true", help="the create claims its task (embedded pool)")
    args = parser.parse_args()
    if args.runs < 1 or args.rounds < 1:
        parser.error("--runs and --rounds must be at least 1")
    actor, agent_id = setup()  # no executor is registered: a create's dispatch hint goes nowhere
    if args.seat:
        from tasks_app import dispatch

        dispatch.register(BenchSeats())
    warm: dict[str, float] = dict.fromkeys(STEPS, 0.0)
    for i in range(20):
        one_run(actor, agent_id, warm, i, args.seat)
    rounds = []
    for _ in range(args.rounds):
        times = dict.fromkeys(STEPS, 0.0)
        for i in range(args.runs):
            one_run(actor, agent_id, times, i, args.seat)
        rounds.append(
            {k: v / args.runs * 1000 for k, v in times.items()}
            | {"total": sum(times.values()) / args.runs * 1000}
        )
    out = {}
    for key in (*STEPS, "total"):
        values = [r[key] for r in rounds]
        out[key] = {"median_ms": round(statistics.median(values), 3), "min_ms": round(min(values), 3),
                    "max_ms": round(max(values), 3)}  # fmt: skip
        print(
            f"{key:9s} {out[key]['median_ms']:7.3f} ms CPU per run ({out[key]['min_ms']:.3f}-{out[key]['max_ms']:.3f})"
        )
    print(json.dumps({"runs": args.runs, "rounds": args.rounds, "seat": args.seat, "steps": out}))


if __name__ == "__main__":
    main()
