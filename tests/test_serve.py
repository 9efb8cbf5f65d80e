"""`python -m console.serve`: daphne on uvloop, or on asyncio's loop when SERVER_EVENT_LOOP says so.

Every live-server test (tests/live.py) starts the server through this entry point; these check the
loop it picks and that a wrong setting stops it with a clear message before anything listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import asyncio, console.serve as s; s.install_loop(); "
    "loop = asyncio.new_event_loop(); print(type(loop).__module__); loop.close()"
)


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("setting", "module"), [("", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio.unix_events")]
)
def test_the_server_loop_is_uvloop_unless_asyncio_is_asked_for(setting, module):
    out = run(PROBE, SERVER_EVENT_LOOP=setting)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == module


def test_daphne_runs_on_the_loop_installed_before_it():
    code = (
        "import console.serve as s; s.install_loop(); import daphne.server, uvloop; "
        "print(isinstance(daphne.server.twisted_loop, uvloop.Loop))"
    )
    out = run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_an_unknown_loop_stops_the_server_before_it_listens():
    out = subprocess.run(
        [sys.executable, "-m", "console.serve", "-b", "127.0.0.1", "-p", "0", "console.asgi:application"],
        cwd=ROOT,
        env={**os.environ, "SERVER_EVENT_LOOP": "trio"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "SERVER_EVENT_LOOP must be one of uvloop, asyncio, not 'trio'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("setting", "module"), [("", "uvloop"), ("asyncio", "asyncio.unix_events")])
def test_the_workers_run_loops_are_the_same_kind_and_the_policy_is_left_alone(setting, module):
    code = (
        "import asyncio, console.serve as s; loop = s.new_event_loop(); "
        "print(type(loop).__module__, type(asyncio.get_event_loop_policy()).__module__); loop.close()"
    )
    out = run(code, SERVER_EVENT_LOOP=setting)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [module, "asyncio.unix_events"]


@pytest.mark.parametrize(("setting", "outcome"), [("", "asyncio"), ("uvloop", "exit")])
def test_without_uvloop_the_default_is_asyncio_and_asking_for_it_stops(setting, outcome):
    code = "import sys; sys.modules['uvloop'] = None; import console.serve as s; print(s.install_loop())"
    out = run(code, SERVER_EVENT_LOOP=setting)
    if outcome == "exit":
        assert out.returncode == 1
        assert "SERVER_EVENT_LOOP is uvloop, but uvloop is not installed" in out.stderr
        assert "Traceback" not in out.stderr
    else:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "asyncio"


# -- the request's body is the application's to parse ---------------------------------------------


def test_daphnes_requests_are_built_with_twisteds_form_parsing_off_once():
    code = (
        "import console.serve as s; s.install_loop(); from daphne import http_protocol as h; "
        "daphnes = h.WebRequest; s.raw_request_bodies(); s.raw_request_bodies(); "
        "print(h.WebRequest.__bases__ == (daphnes,), h.WebRequest.raw_bodies)"
    )
    out = run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True"


@pytest.mark.live
def test_a_malformed_multipart_create_gets_the_apis_json_400(daphne_server):
    """Twisted used to parse a POST's multipart body itself (on the loop) and answer a malformed one
    with an empty 400; the body now reaches Django, whose parser the API's error handler answers."""
    account = daphne_server.account("Multipart Org", f"{uuid.uuid4().hex[:8]}@multipart.test")
    with daphne_server.client(account) as api:
        agent = api.post("/v1/agents", json={"name": "Multipart", "framework": "external"})
        assert agent.status_code == 201, agent.text
        r = api.post(
            f"/agent-execution/{agent.json()['id']}",
            content=b'--xyz\r\nContent-Disposition: form-data; name="body"\r\n\r\n{}\r\n--xyz--\r\n',
            headers={"content-type": "multipart/form-data"},  # no boundary
        )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("Malformed multipart body"), r.text


def test_twisteds_own_access_log_line_is_not_formatted_for_daphnes_requests():
    code = (
        "import console.serve as s; s.install_loop(); s.no_second_access_log(); s.no_second_access_log(); "
        "from daphne import http_protocol as h; from twisted.web import http; "
        "print(h.HTTPFactory.log is s._no_log, http.HTTPFactory.log is not s._no_log)"
    )
    out = run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True"  # daphne's factory only; Twisted's own is left alone


@pytest.mark.live
def test_daphnes_access_log_still_records_each_request(daphne_server):
    account = daphne_server.account("Access Log Org", f"{uuid.uuid4().hex[:8]}@access.test")
    marker = uuid.uuid4().hex
    with daphne_server.client(account) as api:
        assert api.get(f"/agents/list?marker={marker}").status_code == 200
    log = (daphne_server.workdir / "server.log").read_text()
    assert f'"GET /api/agents/list?marker={marker}" 200' in log
