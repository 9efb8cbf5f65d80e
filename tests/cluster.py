"""A scaled-out deployment on loopback for tests and benchmarks: web servers and Celery workers as
separate processes sharing one database, the machine's broker and (optionally) Redis.

Each cluster gets its own Celery queue (so parallel test runs never take each other's runs), and,
on PostgreSQL, its own database, created here and dropped at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.live import ROOT, LiveServer, server_env

RABBITMQ_URL = os.environ.get("TEST_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def private_postgres_database() -> tuple[str, str]:
    """Create an empty database for one cluster; returns (its URL, its name)."""
    name = f"cluster_{uuid.uuid4().hex[:10]}"
    _admin_sql(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_postgres_database(name: str) -> None:
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    servers: list[LiveServer] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    database: str = ""

    def start_server(self) -> LiveServer:
        server = LiveServer(self.workdir, self.env)
        if self.servers:  # accounts live in the shared database: reuse the first server's
            server.accounts = self.servers[0].accounts
        server.start()
        self.servers.append(server)
        return server

    def start_worker(self, concurrency: int = 50) -> Worker:
        name = f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:4]}"
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "console",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--queues",
                self.env["CELERY_QUEUE"],
                "--hostname",
                f"{name}@127.0.0.1",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited: {worker.log_text()[-3000:]}")
            if " ready." in worker.log_text():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker {worker.name} not ready: {worker.log_text()[-3000:]}")

    def kill(self, worker: Worker) -> None:
        """SIGKILL: the worker vanishes without acknowledging or releasing anything."""
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
        for server in self.servers:
            server.stop()
        if self.database:
            drop_postgres_database(self.database)

    def client(self, server: LiveServer, account) -> httpx.Client:
        return server.client(account)


def cluster_env(workdir: Path, *, postgres: bool, redis_url: str = "", **overrides: str) -> tuple[dict, str]:
    """The environment every process of one cluster shares; returns (env, private database name)."""
    database = ""
    extra: dict[str, str] = {
        "TASK_EXECUTION": "celery",
        "CELERY_BROKER_URL": RABBITMQ_URL,
        "CELERY_QUEUE": f"test-runs-{uuid.uuid4().hex[:8]}",
    }
    if postgres:
        url, database = private_postgres_database()
        extra["DATABASE_URL"] = url
    if redis_url:
        extra["REDIS_URL"] = redis_url
    extra.update(overrides)
    return server_env(workdir, **extra), database
