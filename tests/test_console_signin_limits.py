"""Failed sign-ins are limited per account (whatever the address) and per address (whatever the
account), with a clear message and a 429, and recorded on the audit log."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from console.models import AuditEvent
from tests.console_helpers import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings, alice):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CONSOLE_SIGNIN_ATTEMPTS = 3
    settings.CONSOLE_SIGNIN_ADDRESS_ATTEMPTS = 5
    cache.clear()
    alice.member.user.set_password(PASSWORD)
    alice.member.user.save()


def test_guessing_one_account_from_many_addresses_is_stopped(alice):
    for i in range(3):
        r = Client(REMOTE_ADDR=f"127.0.0.{10 + i}").post(
            "/", {"email": "alice@example.com", "password": "guess"}
        )
        assert r.status_code == 400
    r = Client(REMOTE_ADDR="127.0.0.20").post("/", {"email": "alice@example.com", "password": PASSWORD})
    assert r.status_code == 429 and "Too many failed sign-ins for this email" in r.content.decode()
    assert AuditEvent.objects.filter(action="signin.failed", organization=alice.org).count() == 3


def test_trying_many_accounts_from_one_address_is_stopped(alice):
    client = Client(REMOTE_ADDR="127.0.0.30")
    for i in range(5):
        assert client.post("/", {"email": f"user{i}@example.com", "password": "guess"}).status_code == 400
    r = client.post("/", {"email": "alice@example.com", "password": PASSWORD})
    assert r.status_code == 429 and "from your address" in r.content.decode()
    other = Client(REMOTE_ADDR="127.0.0.31").post("/", {"email": "alice@example.com", "password": PASSWORD})
    assert other.status_code == 302  # the account itself is not locked by someone else's address
