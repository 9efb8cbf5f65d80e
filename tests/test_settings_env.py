"""console/settings.py reads the environment through django-environ: the same names and defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent

_PRINT = (
    "import json; from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default'], 'hosts': s.ALLOWED_HOSTS, "
    "'exec': s.TASK_EXECUTION, 'page': s.CONSOLE_PAGE_SIZE, 'https': s.HTTPS, "
    "'allow': s.OUTBOUND_ALLOWLIST, 'keys': len(s.FIELD_ENCRYPTION_KEYS), 'secret': s.SECRET_KEY, 'lean': s.LLM_LEAN_STREAM, 'wait': s.REQUEST_CALL_WAIT_MS}, default=str))"
)


def _settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "TASK_EXECUTION"}}
    full.update(DJANGO_SETTINGS_MODULE="console.settings", VAR_DIR=str(tmp_path))
    full.update(env)
    code = f"import django; django.setup(); {_PRINT}"
    return subprocess.run(
        [sys.executable, "-c", code], env=full, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _ok(tmp_path: Path, **env: str) -> dict:
    out = _settings(tmp_path, **env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_it_keeps_the_embedded_defaults_when_nothing_is_set(tmp_path):
    got = _ok(tmp_path, CONSOLE_PAGE_SIZE="")
    assert got["db"]["ENGINE"] == "console.sqlite"
    assert got["db"]["NAME"] == str(tmp_path / "db.sqlite3")
    assert got["hosts"] == ["127.0.0.1", "localhost"]
    assert got["exec"] == "inprocess"
    assert got["page"] == 50  # set but empty means the default
    assert got["https"] is False
    assert got["wait"] == 15.0  # the loop waits for SQLite's calls (console/handler.py hand_over)


def test_it_reads_a_postgres_url_into_a_database_entry(tmp_path):
    got = _ok(
        tmp_path,
        DATABASE_URL="postgres://user:p%40ss@127.0.0.1:5433/tasks?sslmode=disable",
        SECRET_KEY="$not-a-reference",
        FIELD_ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()}, {Fernet.generate_key().decode()}",
    )
    db = got["db"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "tasks",
        "user",
        "p@ss",
        "127.0.0.1",
        "5433",
    )
    assert db["OPTIONS"] == {"sslmode": "disable"}
    assert db["CONN_MAX_AGE"] == 600  # kept between requests; one older than 10 minutes is replaced
    assert got["wait"] == 0.0  # the calls wait on the network: the loop does not wait for them
    assert got["keys"] == 2
    assert got["secret"] == "$not-a-reference"  # secrets are taken as they are


def test_it_puts_a_relative_sqlite_path_under_the_project(tmp_path):
    got = _ok(tmp_path, DATABASE_URL="sqlite:///var/settings-test.sqlite3")
    assert got["db"]["NAME"] == str(ROOT / "var" / "settings-test.sqlite3")
    assert got["db"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_it_reads_lists_booleans_and_the_celery_execution(tmp_path):
    got = _ok(
        tmp_path,
        ALLOWED_HOSTS=" a.example, b.example ,,",
        HTTPS="on",
        TASK_EXECUTION="celery",
        OUTBOUND_ALLOWLIST="127.0.0.1",
        FILE_FETCH_ALLOWLIST="::1",
    )
    assert got["hosts"] == ["a.example", "b.example"]
    assert got["https"] is True
    assert got["exec"] == "celery"
    assert got["allow"] == ["127.0.0.1", "::1"]


def test_it_names_the_variable_that_does_not_parse(tmp_path):
    out = _settings(tmp_path, CONSOLE_PAGE_SIZE="fifty")
    assert out.returncode != 0
    assert "CONSOLE_PAGE_SIZE must be an integer, got 'fifty'" in out.stderr
    out = _settings(tmp_path, TASK_EXECUTION="threads")
    assert "TASK_EXECUTION must be inprocess, none or celery" in out.stderr
    out = _settings(tmp_path, DATABASE_URL="mysql://root@127.0.0.1/test")
    assert "DATABASE_URL scheme 'mysql' is not supported" in out.stderr
    out = _settings(tmp_path, MCP_TOOLS_CACHE_SECONDS="-1")
    assert "MCP_TOOLS_CACHE_SECONDS must not be negative" in out.stderr
    out = _settings(tmp_path, DB_CONN_MAX_AGE="-5")
    assert "DB_CONN_MAX_AGE must not be negative" in out.stderr
    out = _settings(tmp_path, REQUEST_CALL_WAIT_MS="soon")
    assert "REQUEST_CALL_WAIT_MS must be a number, got 'soon'" in out.stderr
    for bad in ("-1", "51"):
        out = _settings(tmp_path, REQUEST_CALL_WAIT_MS=bad)
        assert "REQUEST_CALL_WAIT_MS must be between 0 and 50" in out.stderr
    assert _ok(tmp_path, REQUEST_CALL_WAIT_MS="0")["wait"] == 0.0
    assert _ok(tmp_path)["lean"] is True
    assert _ok(tmp_path, LLM_LEAN_STREAM="off")["lean"] is False


def test_it_takes_the_file_storage_from_the_environment(tmp_path):
    code = (
        "import django; django.setup(); from django.core.files.storage import default_storage as d; "
        "d._setup(); print(type(d._wrapped).__name__, d.location)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings", "VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    env["FILE_STORAGE_OPTIONS"] = json.dumps({"location": str(tmp_path / "shared")})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["FileSystemStorage", str(tmp_path / "shared")], out.stderr[-2000:]
