"""Encryption of secrets we must replay (model API keys, user MCP tokens).

Keys come from FIELD_ENCRYPTION_KEYS (Fernet keys, the first encrypts, all decrypt), never from
SECRET_KEY, so rotating the session secret never loses stored tokens.

Every encrypted column is a text field whose name ends in `_encrypted`: that convention is how
key rotation and the start-up key check find all of them, in every app, without importing them.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, models


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


class KeysDoNotMatchData(Exception):
    """Stored secrets cannot be decrypted with the configured keys: the server must not start."""


def encrypted_columns() -> list[tuple[type[models.Model], str]]:
    """Every (model, field) holding encrypted text, across all installed apps."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if field.name.endswith("_encrypted")
    ]


def check_stored_secrets() -> None:
    """Refuse to start when stored secrets were encrypted with a key we no longer have.

    Starting anyway would write new secrets under a new key beside old ones nobody can read, and
    every task using the old ones would fail. One sample per column is enough: all rows of a
    column are written under the same key list.
    """
    for model, field in encrypted_columns():
        try:
            value = model.objects.exclude(**{field: ""}).values_list(field, flat=True).first()
        except DatabaseError:  # not migrated yet: nothing stored
            continue
        if not value:
            continue
        try:
            decrypt(value)
        except DecryptionError:
            raise KeysDoNotMatchData(_missing_key_message(f"{model.__name__}.{field}")) from None


def _missing_key_message(column: str) -> str:
    generated = [p for p in settings.GENERATED_SECRET_FILES if p == settings.FIELD_ENCRYPTION_KEY_FILE]
    for path in generated:  # a key made just now encrypts nothing yet: remove it so the old one can return
        path.unlink(missing_ok=True)
    source = (
        "FIELD_ENCRYPTION_KEYS in the environment"
        if settings.FIELD_ENCRYPTION_KEYS_FROM_ENV
        else f"{settings.FIELD_ENCRYPTION_KEY_FILE}"
        + (" (missing, so a new key was made; it has been removed again)" if generated else "")
    )
    return (
        f"The database holds encrypted secrets ({column}) that the keys in {source} cannot decrypt. "
        "Restore the key that encrypted them before starting: copy field_encryption_key back from your "
        "backup of var/ (installations older than the removal of the committed key used the key from "
        "the repository: git show $(git log --diff-filter=D -1 --format=%h -- "
        "var/field_encryption_key)^:var/field_encryption_key > var/field_encryption_key; chmod 600 "
        "var/field_encryption_key), or put it in FIELD_ENCRYPTION_KEYS. Then run "
        "`python manage.py rotate_encryption_key --drop-old` to move every secret onto a new key."
    )


def rotate(keys: list[str], *, batch: int = 500) -> dict[str, int]:
    """Re-encrypt every encrypted column under keys[0] (all of `keys` may decrypt).

    Returns how many values were re-encrypted per column. Each model's rows are rewritten in one
    transaction, so an interrupted rotation leaves every row readable with the same key list.
    """
    from django.db import transaction

    fernet = MultiFernet([Fernet(k.encode()) for k in keys])
    counts: dict[str, int] = {}
    for model, field in encrypted_columns():
        done = 0
        with transaction.atomic():
            rows = model.objects.exclude(**{field: ""}).only("pk", field)
            changed = []
            for row in rows.iterator(chunk_size=batch):
                try:
                    setattr(row, field, fernet.rotate(getattr(row, field).encode()).decode())
                except InvalidToken:
                    raise DecryptionError(
                        f"{model.__name__}.{field} of row {row.pk} cannot be decrypted with the given keys"
                    ) from None
                changed.append(row)
                if len(changed) >= batch:
                    model.objects.bulk_update(changed, [field])
                    done += len(changed)
                    changed = []
            if changed:
                model.objects.bulk_update(changed, [field])
                done += len(changed)
        counts[f"{model.__name__}.{field}"] = done
    _fernet.cache_clear()
    return counts
