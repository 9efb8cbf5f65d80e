"""console/heap.py: a server, worker or runworker process freezes its start-up objects and collects
young objects less often; SERVER_GC=python keeps Python's defaults; anything else stops it.

Each check runs in a process of its own: freezing the test runner's heap would change the suite.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import server_env

ROOT = Path(__file__).resolve().parent.parent
LOADED = (
    "import gc, sys, console.serve as s; s.install_loop(); "
    "app = s.load_application('console.asgi:application'); "
    "print(gc.get_freeze_count() > 10_000, gc.get_threshold()[0], "
    "'pydantic_ai.models.openai' in sys.modules)"
)


def run(code: list[str] | str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code] if isinstance(code, str) else code
    env = {"SERVER_GC": "", "TASK_EXECUTION": "inprocess", **env}  # not what the caller's shell exports
    return subprocess.run(
        cmd, cwd=ROOT, env=server_env(tmp_path, **env), capture_output=True, text=True, timeout=60
    )


PYTHONS_THRESHOLD = str(gc.get_threshold()[0])  # this interpreter's default (the suite does not tune)


def test_the_server_freezes_what_it_loaded_with_the_runtime_and_collects_young_objects_less_often(
    tmp_path,
):
    out = run(LOADED, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "10000", "True"]


def test_a_server_that_runs_no_agents_does_not_load_the_runtime(tmp_path):
    out = run(LOADED, tmp_path, TASK_EXECUTION="none")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "10000", "False"]


@pytest.mark.parametrize("setting", ["python", " Python "])
def test_server_gc_python_keeps_pythons_collector(tmp_path, setting):
    out = run(LOADED, tmp_path, SERVER_GC=setting)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", PYTHONS_THRESHOLD, "True"]


def test_an_unknown_server_gc_stops_the_server_before_it_listens(tmp_path):
    cmd = [sys.executable, "-m", "console.serve", "-b", "127.0.0.1", "-p", "0", "console.asgi:application"]
    out = run(cmd, tmp_path, SERVER_GC="off")
    assert out.returncode == 1
    assert "SERVER_GC must be one of tuned, python, not 'off'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_server_entry_point_settles_after_daphne_imports_the_application(tmp_path):
    # `python -m console.serve` as `make run` starts it, with daphne's Server reporting the
    # collector's state instead of listening (the one part replaced: it would serve forever).
    code = (
        "import gc; import console.serve as s; s.install_loop(); cli = s.command_line(); "
        "import daphne.server; "
        "daphne.server.Server.run = lambda self: print(gc.get_freeze_count() > 10_000, gc.get_threshold()[0]); "
        "cli().run(['-b', '127.0.0.1', '-p', '0', 'console.asgi:application'])"
    )
    out = run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "10000"]


@pytest.mark.parametrize(
    "command",
    [["manage.py", "runworker"], ["-m", "celery", "-A", "console", "worker", "--pool", "threads"]],
    ids=["runworker", "celery"],
)
def test_the_workers_refuse_an_unknown_setting_before_they_start(tmp_path, command):
    out = run([sys.executable, *command], tmp_path, SERVER_GC="sometimes")
    assert out.returncode == 1, out.stderr
    assert "SERVER_GC must be one of tuned, python, not 'sometimes'" in out.stderr
    assert "Traceback" not in out.stderr
