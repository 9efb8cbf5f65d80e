"""Encryption of secrets we must replay (model API keys, user MCP tokens).

Keys come from FIELD_ENCRYPTION_KEYS (Fernet keys, the first encrypts, all decrypt), never from
SECRET_KEY, so rotating the session secret never loses stored tokens.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


@cache
def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(k.encode()) for k in settings.FIELD_ENCRYPTION_KEYS])
    except (ValueError, TypeError) as exc:
        raise ValueError("FIELD_ENCRYPTION_KEYS must be comma-separated Fernet keys") from exc


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from exc


def encrypt_json(value: Any) -> str:
    return encrypt(json.dumps(value))


def decrypt_json(token: str) -> Any:
    return json.loads(decrypt(token))
