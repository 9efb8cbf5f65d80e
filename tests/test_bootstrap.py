"""`python manage.py bootstrap`: an organization, its owner and an API key, idempotently."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from console.models import ApiKey, Membership, Organization, hash_api_key

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bootstrap(*args: str) -> dict:
    out = io.StringIO()
    call_command("bootstrap", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def acme(*extra: str) -> dict:
    return bootstrap("--org", "Acme", "--email", "ops@acme.test", "--password", "s3cret-pass", *extra)


def api_get(key: str, path: str):
    return Client().get(path, headers={"x-api-key": key})


def test_it_creates_an_organization_an_owner_and_a_working_key():
    out = acme()
    assert set(out) == {"organization_id", "user_id", "api_key"}
    org = Organization.objects.get(pk=out["organization_id"])
    assert org.name == "Acme"
    user = get_user_model().objects.get(pk=out["user_id"])
    assert user.email == "ops@acme.test"
    assert authenticate(username="ops@acme.test", password="s3cret-pass") == user
    assert Membership.objects.get(organization=org, user=user).role == "owner"
    assert out["api_key"].startswith("atc_")
    r = api_get(out["api_key"], "/api/v1/agents")
    assert r.status_code == 200 and r.json() == []
    assert ApiKey.objects.get().key_hash == hash_api_key(out["api_key"])


def test_it_is_idempotent_and_keeps_the_existing_key():
    first = acme()
    again = acme()
    assert again == {
        "organization_id": first["organization_id"],
        "user_id": first["user_id"],
        "api_key": None,
    }
    assert Organization.objects.count() == 1
    assert get_user_model().objects.count() == 1
    assert Membership.objects.count() == 1
    assert ApiKey.objects.count() == 1
    assert api_get(first["api_key"], "/api/v1/agents").status_code == 200


def test_new_key_issues_another_key_and_keeps_the_old_one():
    first = acme()
    second = acme("--new-key")
    assert second["organization_id"] == first["organization_id"]
    assert second["api_key"] and second["api_key"] != first["api_key"]
    assert ApiKey.objects.count() == 2
    for key in (first["api_key"], second["api_key"]):
        assert api_get(key, "/api/v1/agents").status_code == 200


def test_it_issues_a_key_again_when_the_bootstrap_key_was_revoked():
    first = acme()
    ApiKey.objects.get().revoke()
    again = acme()
    assert again["api_key"]
    assert api_get(again["api_key"], "/api/v1/agents").status_code == 200
    assert api_get(first["api_key"], "/api/v1/agents").status_code == 401


def test_the_same_person_can_join_a_second_organization():
    first = acme()
    other = bootstrap("--org", "Bravo", "--email", "ops@acme.test", "--password", "s3cret-pass")
    assert other["user_id"] == first["user_id"]
    assert other["organization_id"] != first["organization_id"]
    assert other["api_key"]
    r = Client().post(
        "/api/v1/agents",
        data=json.dumps({"name": "B"}),
        content_type="application/json",
        headers={"x-api-key": other["api_key"]},
    )
    assert r.json()["organization_id"] == other["organization_id"]


def test_it_sets_the_role():
    acme()
    out = bootstrap(
        "--org", "Acme", "--email", "viewer@acme.test", "--password", "pw-123456", "--role", "viewer"
    )
    assert Membership.objects.get(user_id=out["user_id"]).role == "viewer"
    r = Client().post(
        "/api/v1/agents",
        data=json.dumps({"name": "x"}),
        content_type="application/json",
        headers={"x-api-key": out["api_key"]},
    )
    assert r.status_code == 403


def test_it_rejects_a_bad_email_and_an_empty_org():
    with pytest.raises(CommandError, match="not an email"):
        bootstrap("--org", "Acme", "--email", "nope", "--password", "pw")
    with pytest.raises(CommandError, match="--org"):
        bootstrap("--org", "  ", "--email", "ops@acme.test", "--password", "pw")
    assert not Organization.objects.exists()
    assert not get_user_model().objects.exists()


def test_if_empty_does_nothing_once_an_organization_exists():
    acme()
    out = io.StringIO()
    call_command("bootstrap", "--org", "Other", "--email", "x@y.test", "--if-empty", "--json", stdout=out)
    assert out.getvalue() == ""
    assert list(Organization.objects.values_list("name", flat=True)) == ["Acme"]


def test_without_json_it_prints_the_key_once():
    out = io.StringIO()
    call_command("bootstrap", "--org", "Acme", "--email", "ops@acme.test", stdout=out)
    text = out.getvalue()
    assert "API key (shown once, keep it): atc_" in text
    assert "Sign in at / with email ops@acme.test and password " in text
    out = io.StringIO()
    call_command("bootstrap", "--org", "Acme", "--email", "ops@acme.test", stdout=out)
    assert "API key: unchanged" in out.getvalue()
    assert "atc_" not in out.getvalue()


def test_it_prints_the_console_address_to_sign_in_at():
    out = io.StringIO()
    call_command("bootstrap", "--email", "ops@acme.test", "--url", "http://127.0.0.1:8000/", stdout=out)
    assert "Sign in at http://127.0.0.1:8000/ with email ops@acme.test and password " in out.getvalue()


def test_manage_py_prints_only_json(tmp_path):
    env = {**os.environ, "VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    run = [sys.executable, "manage.py"]
    subprocess.run([*run, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, capture_output=True)
    args = [
        *run,
        "bootstrap",
        "--org",
        "Acme",
        "--email",
        "ops@acme.test",
        "--password",
        "pw-123456",
        "--json",
    ]
    first = subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    again = subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    created, kept = json.loads(first.stdout), json.loads(again.stdout)
    assert created["api_key"].startswith("atc_")
    assert kept == {**created, "api_key": None}
