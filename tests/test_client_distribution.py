"""The client as its own distribution: `pip install ./clients/python[agno]` into a venv of its own
(no server parts, agno with mcp 1.x), then the distribution's own tests run there against a live server.

The venv is cached under .cache/ like the SDK's; its dependencies install once, and the client
itself is reinstalled whenever its sources change (a stamp holds their hash).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.live import ROOT
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = [pytest.mark.live, pytest.mark.timeout(1500)]

DIST = ROOT / "clients" / "python"
VENV = ROOT / ".cache" / "client-dist-venv"
SOURCES = [
    DIST / "pyproject.toml",
    *sorted((ROOT / "tasks_app" / "client").rglob("*.py")),
]


def _run(cmd: list[str | Path], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def sources_hash() -> str:
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_client_venv() -> Path:
    """The venv's python with the distribution installed from the current sources."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            out = _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", VENV], timeout=120)
            assert out.returncode == 0, out.stderr[-3000:]
        deps, wanted_deps = VENV / ".deps", hashlib.sha256((DIST / "pyproject.toml").read_bytes()).hexdigest()
        if not deps.exists() or deps.read_text() != wanted_deps:  # the dependencies, once per pyproject
            out = _run([python, "-m", "pip", "install", "-q", f"{DIST}[agno]", "pytest"], timeout=1200)
            assert out.returncode == 0, f"installing the client failed:\n{out.stderr[-3000:]}"
            deps.write_text(wanted_deps)
        wanted = sources_hash()
        if not stamp.exists() or stamp.read_text() != wanted:
            out = _run(
                [python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", DIST], timeout=600
            )
            assert out.returncode == 0, f"reinstalling the client failed:\n{out.stderr[-3000:]}"
            stamp.write_text(wanted)
    return python


def test_the_distributions_own_tests_pass_in_a_venv_of_its_own(daphne_server, scripted_model: ScriptedModel):
    python = ensure_client_venv()
    server = daphne_server
    account = server.account("Client Dist Org", "dist@client.test")
    scripted_model.set_script([Turn(text="hello from the script")])
    with server.client(account) as api:
        external = api.post(
            "/v1/agents", json={"name": f"Ext {uuid.uuid4().hex[:6]}", "framework": "external"}
        )
        assert external.status_code == 201, external.text
        model = api.post(
            "/v1/agents",
            json={
                "name": f"Model {uuid.uuid4().hex[:6]}",
                "model_provider": "openai_compatible",
                "model_name": "scripted-model",
                "model_base_url": scripted_model.base_url,
            },
        )
        assert model.status_code == 201, model.text
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "XPANDER_", "PYTHON"))}
    env.update(
        XPANDER_BASE_URL=server.api,
        XPANDER_API_KEY=account.api_key,
        XPANDER_ORGANIZATION_ID=account.organization_id,
        CLIENT_TEST_AGENT_ID=external.json()["id"],
        CLIENT_TEST_MODEL_AGENT_ID=model.json()["id"],
        OPENAI_API_KEY="sk-scripted",  # agno's OpenAI client wants one; the scripted model ignores it
    )
    out = _run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], timeout=600, cwd=DIST, env=env
    )
    assert out.returncode == 0, f"{out.stdout[-5000:]}\n{out.stderr[-3000:]}"
    assert "4 passed" in out.stdout, out.stdout[-2000:]
