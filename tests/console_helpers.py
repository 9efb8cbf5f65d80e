"""Helpers for console tests: a persona's browser-like client, signed in with a password."""

from __future__ import annotations

from django.test import Client

from tests.conftest import Persona

PASSWORD = "correct horse battery staple"


def signed_in(persona: Persona) -> Client:
    """A fresh client signed in through the sign-in form, as a person would."""
    user = persona.member.user
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    client = Client()
    r = client.post("/", {"email": user.email, "password": PASSWORD})
    assert r.status_code == 302, r.content
    return client
