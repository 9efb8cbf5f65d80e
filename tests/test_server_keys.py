"""The server's own secrets: never in git, generated once (0600) for the embedded default only,
checked against the stored data at start, and rotatable.

Settings are read once per process, so each case runs manage.py (or daphne) in a subprocess with
its own VAR_DIR and database.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.live import ROOT, free_port

SEED = """
from console import crypto
from console.models import Agent, GraphItem, Organization, UserToken
from tasks_app.models import Task
org = Organization.objects.create(name="Keys")
agent = Agent.objects.create(organization=org, name="A", unique_name="a")
agent.set_model_api_key("sk-model-secret")
agent.save()
GraphItem.objects.create(agent=agent, key="gi", type="mcp", secret_settings_encrypted=crypto.encrypt_json({"api_key": "mcp-secret"}))
UserToken.objects.create(organization=org, external_user_id="u-1", graph_item_key="gi", token_encrypted=crypto.encrypt("user-secret"))
Task.objects.create(organization=org, agent=agent, user_tokens_encrypted=crypto.encrypt_json({"gi": "task-secret"}))
"""

DUMP = """
from console import crypto
for model, field in crypto.encrypted_columns():
    for value in model.objects.exclude(**{field: ""}).values_list(field, flat=True):
        print(field, crypto.decrypt(value))
"""


def env_for(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL"}
    }
    env.update(VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="console.settings", **extra)
    return env


def manage(var_dir: Path, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env_for(var_dir, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def seeded(var_dir: Path) -> Path:
    manage(var_dir, "migrate", "--noinput", "-v", "0")
    manage(var_dir, "shell", "-v", "0", "-c", SEED)
    return var_dir / "field_encryption_key"


def stored_values(var_dir: Path) -> str:
    return manage(var_dir, "shell", "-v", "0", "-c", DUMP).stdout


def test_no_secret_of_the_server_is_tracked_in_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "var"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.strip() == ""


def test_it_generates_the_keys_once_readable_by_the_owner_only(tmp_path):
    manage(tmp_path, "check")
    files = [tmp_path / "secret_key", tmp_path / "field_encryption_key"]
    first = [f.read_text() for f in files]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    Fernet(first[1].strip().encode())  # a valid key
    manage(tmp_path, "check")
    assert [f.read_text() for f in files] == first


def test_it_refuses_to_start_on_postgres_without_keys_in_the_environment(tmp_path):
    proc = manage(tmp_path, "check", check=False, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test")
    assert proc.returncode != 0
    assert "SECRET_KEY" in proc.stderr and "FIELD_ENCRYPTION_KEYS" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing generated for a shared database
    keys = {"SECRET_KEY": "x" * 60, "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    manage(tmp_path, "check", DATABASE_URL="postgres://postgres@127.0.0.1:5432/test", **keys)


def start_server(var_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    """Start daphne the way `make run` does; a server that refuses exits on its own."""
    try:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "console.serve",
                "-b",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "console.asgi:application",
            ],
            cwd=ROOT,
            env=env_for(var_dir, **extra),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server started although it cannot decrypt the stored secrets")


def test_a_server_whose_key_file_is_gone_refuses_to_start_and_says_how_to_recover(tmp_path):
    key_file = seeded(tmp_path)
    old_key = key_file.read_text()
    key_file.unlink()  # what `git pull` does to an install that ran with the committed key
    proc = start_server(tmp_path)
    assert proc.returncode != 0
    assert "Refusing to start" in proc.stderr
    assert "backup of var/" in proc.stderr and "rotate_encryption_key" in proc.stderr
    assert not key_file.exists()  # the key made on this start was taken back, so the old one can return
    key_file.write_text(old_key)
    key_file.chmod(0o600)
    assert "user-secret" in stored_values(tmp_path)


def test_a_runworker_with_the_wrong_keys_refuses_to_start(tmp_path):
    seeded(tmp_path)
    proc = manage(tmp_path, "runworker", check=False, FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    assert proc.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS in the environment cannot decrypt" in proc.stderr


def test_rotation_moves_every_encrypted_column_onto_a_new_key(tmp_path):
    key_file = seeded(tmp_path)
    old_key = key_file.read_text().strip()
    before = stored_values(tmp_path)
    assert {"sk-model-secret", "mcp-secret", "user-secret", "task-secret"} <= set(
        before.replace('"', " ").split()
    )

    out = manage(tmp_path, "rotate_encryption_key").stdout
    keys = key_file.read_text().strip().split(",")
    assert keys[1:] == [old_key] and keys[0] != old_key
    assert "Task.user_tokens_encrypted: 1 re-encrypted" in out

    manage(tmp_path, "rotate_encryption_key", "--drop-old")
    (new_key,) = key_file.read_text().strip().split(",")
    assert new_key not in keys and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stored_values(tmp_path) == before  # every value still reads, under the new key alone
    raw = manage(
        tmp_path,
        "shell",
        "-v",
        "0",
        "-c",
        "from console.crypto import encrypted_columns\n"
        "for m, f in encrypted_columns():\n"
        "    [print(v) for v in m.objects.exclude(**{f: ''}).values_list(f, flat=True)]",
    ).stdout.split()
    assert len(raw) == 4
    for value in raw:
        with pytest.raises(InvalidToken):
            Fernet(old_key.encode()).decrypt(value.encode())
        Fernet(new_key.encode()).decrypt(value.encode())


def test_rotation_with_keys_from_the_environment_reencrypts_under_the_first(tmp_path):
    old = Fernet.generate_key().decode()
    manage(tmp_path, "migrate", "--noinput", "-v", "0", FIELD_ENCRYPTION_KEYS=old)
    manage(tmp_path, "shell", "-v", "0", "-c", SEED, FIELD_ENCRYPTION_KEYS=old)
    new = manage(tmp_path, "rotate_encryption_key", "--generate").stdout.strip()
    both = f"{new},{old}"
    out = manage(tmp_path, "rotate_encryption_key", FIELD_ENCRYPTION_KEYS=both).stdout
    assert "you can now remove the others" in out
    assert "user-secret" in manage(tmp_path, "shell", "-v", "0", "-c", DUMP, FIELD_ENCRYPTION_KEYS=new).stdout
    refused = manage(tmp_path, "rotate_encryption_key", "--drop-old", check=False, FIELD_ENCRYPTION_KEYS=new)
    assert refused.returncode != 0 and "remove the old keys from that variable" in refused.stderr


def test_deploy_checks_are_clean_with_the_documented_https_settings(tmp_path):
    https = {
        "HTTPS": "on",
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        "SECURE_HSTS_PRELOAD": "on",
        "ALLOWED_HOSTS": "console.example.com",
    }
    proc = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **https)
    assert "no issues" in proc.stdout
    plain = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", check=False)
    assert plain.returncode != 0 and "SECURE_SSL_REDIRECT" in plain.stderr
