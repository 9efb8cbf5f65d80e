"""Files uploaded with a task (multipart create): stored with Django's storage, served by URL.

An upload gets an unguessable URL under MEDIA_URL (a capability URL, as the xpander SDK's file
helpers fetch without credentials); the runtime reads it straight from storage instead.
"""

from __future__ import annotations

import mimetypes
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from django.utils.text import get_valid_filename

from tasks_app.errors import Invalid, TooLarge


@dataclass
class Upload:
    url: str
    storage_name: str
    name: str
    mime: str
    size: int


def save_uploads(request: HttpRequest, files: list[UploadedFile]) -> list[Upload]:
    if len(files) > settings.TASK_MAX_FILES:
        raise Invalid("files", f"at most {settings.TASK_MAX_FILES} files per task")
    for f in files:
        if f.size > settings.TASK_UPLOAD_MAX_BYTES:
            raise TooLarge(
                f"{f.name} is {f.size} bytes; the limit is {settings.TASK_UPLOAD_MAX_BYTES}",
                limit=settings.TASK_UPLOAD_MAX_BYTES,
            )
    saved: list[Upload] = []
    folder = f"tasks/{uuid.uuid4().hex}"
    try:
        for f in files:
            name = get_valid_filename(f.name or "file")[:150] or "file"
            stored = default_storage.save(f"{folder}/{name}", f)
            mime = f.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            url = request.build_absolute_uri(settings.MEDIA_URL.rstrip("/") + "/" + stored)
            saved.append(Upload(url, stored, name, mime, f.size))
    except Exception:
        discard(saved)
        raise
    return saved


def discard(uploads: list[Upload]) -> None:
    """Remove stored uploads of a task that was not created (nothing half-written)."""
    for upload in uploads:
        default_storage.delete(upload.storage_name)


def read(storage_name: str) -> bytes:
    with default_storage.open(storage_name, "rb") as fh:
        return fh.read()
