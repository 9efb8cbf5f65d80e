"""`python manage.py rotate_encryption_key`: move every encrypted column onto a new key.

With keys in var/field_encryption_key (the embedded default), it makes a new key, puts it first in
that file, re-encrypts everything under it, and with `--drop-old` then removes the old keys from
the file. With FIELD_ENCRYPTION_KEYS in the environment it cannot edit the environment: put the new
key first there (`--generate` prints one), then run it to re-encrypt under that first key, then
remove the old keys from the variable. Stop servers and workers first: a process still holding only
the old key cannot read what was re-encrypted.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console import crypto


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(",".join(keys) + "\n")
    os.replace(tmp, path)


class Command(BaseCommand):
    help = "Re-encrypt every stored secret under a new field encryption key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--drop-old", action="store_true", help="remove the old keys from the key file afterwards"
        )
        parser.add_argument("--generate", action="store_true", help="only print a new key and exit")

    def handle(self, *args, **opts) -> None:
        if opts["generate"]:
            self.stdout.write(Fernet.generate_key().decode())
            return
        old = list(settings.FIELD_ENCRYPTION_KEYS)
        if settings.FIELD_ENCRYPTION_KEYS_FROM_ENV:
            if opts["drop_old"]:
                raise CommandError(
                    "The keys come from FIELD_ENCRYPTION_KEYS: remove the old keys from that variable "
                    "yourself once this command has re-encrypted everything under its first key."
                )
            keys = old
        else:
            keys = [Fernet.generate_key().decode(), *old]
            write_key_file(settings.FIELD_ENCRYPTION_KEY_FILE, keys)
        try:
            counts = crypto.rotate(keys)
        except crypto.DecryptionError as exc:
            raise CommandError(f"{exc}. Nothing was changed in that column; restore its key first.") from None
        settings.FIELD_ENCRYPTION_KEYS = keys
        for column, count in counts.items():
            self.stdout.write(f"{column}: {count} re-encrypted")
        if settings.FIELD_ENCRYPTION_KEYS_FROM_ENV:
            self.stdout.write(
                "Everything is encrypted under the first key of FIELD_ENCRYPTION_KEYS; "
                "you can now remove the others from it."
            )
        elif opts["drop_old"]:
            write_key_file(settings.FIELD_ENCRYPTION_KEY_FILE, keys[:1])
            settings.FIELD_ENCRYPTION_KEYS = keys[:1]
            crypto._fernet.cache_clear()
            self.stdout.write(f"{settings.FIELD_ENCRYPTION_KEY_FILE} now holds only the new key.")
        else:
            self.stdout.write(
                f"The new key is first in {settings.FIELD_ENCRYPTION_KEY_FILE}; the old keys still decrypt. "
                "Run again with --drop-old to remove them."
            )
