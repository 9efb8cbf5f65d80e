"""A live server for end-to-end tests: daphne on a free loopback port, its own SQLite file.

Tests talk to it only over HTTP (REST, SSE), as real clients do. Personas are created with the
`bootstrap` management command, the same way scripts do.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Account:
    organization_id: str
    user_id: int
    api_key: str


@dataclass
class LiveServer:
    workdir: Path
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen | None = None
    accounts: dict[str, Account] = field(default_factory=dict)
    root: Path = ROOT  # the code tree served (bench/compare.py serves an older commit's worktree)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def manage(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, str(self.root / "manage.py"), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout

    def account(self, org: str, email: str, role: str = "owner") -> Account:
        """An organization member with a fresh API key (created once per server)."""
        key = f"{org}/{email}"
        if key not in self.accounts:
            raw = self.manage(
                "bootstrap",
                "--org",
                org,
                "--email",
                email,
                "--password",
                "pw-" + email,
                "--role",
                role,
                "--new-key",
                "--json",
            )
            data = json.loads(raw.strip().splitlines()[-1])
            self.accounts[key] = Account(data["organization_id"], data["user_id"], data["api_key"])
        return self.accounts[key]

    def client(self, account: Account, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers={"x-api-key": account.api_key}, timeout=30, **kw)

    def start(self, *, same_port: bool = False) -> None:
        """Migrate and start daphne; `same_port` restarts it where clients already point."""
        self.manage("migrate", "--noinput", "-v", "0")
        self.port = self.port if same_port and self.port else free_port()
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - kept open for the server's life
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                # `make run`'s entry point; a tree from before it (the benchmark's base commit) has daphne's
                "console.serve" if (self.root / "console" / "serve.py").exists() else "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "console.asgi:application",
            ],
            env=self.env,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_text(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def server_env(workdir: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "DATABASE_URL": f"sqlite:///{workdir}/db.sqlite3",
        "VAR_DIR": str(workdir),
        "MEDIA_ROOT": str(workdir / "media"),
        "SECRET_KEY": "live-test-secret",
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "OUTBOUND_ALLOWLIST": "127.0.0.1",  # the scripted model, MCP and file servers
        "SSE_KEEPALIVE_SECONDS": "1",
        "STOP_WAIT_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    env.update(overrides)
    return env
