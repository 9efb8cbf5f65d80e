"""Files uploaded with a task (multipart create): stored with Django's storage, served by link.

An upload's URL is a signed, expiring capability (/files/<token>/<name>), because the xpander SDK's
file helpers fetch without credentials; after TASK_UPLOAD_LINK_MAX_AGE the link also works with an
x-api-key of the organization. Files are served as attachments that no browser renders on our
origin (stored XSS). The runtime reads uploads straight from storage instead.
"""

from __future__ import annotations

import mimetypes
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_safe

from console.errors import Forbidden, Invalid, TaskApiError, TooLarge
from tasks_app.actions import Actor

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers, generously
SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}


@dataclass
class Upload:
    url: str
    storage_name: str
    name: str
    mime: str
    size: int


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt="tasks_app.uploads")


def link(request: HttpRequest, organization_id: str, storage_name: str) -> str:
    """The capability URL of a stored upload (its file name last, so its extension still sorts it)."""
    token = _signer().sign_object({"o": organization_id, "p": storage_name}, compress=True)
    name = posixpath.basename(storage_name)
    return request.build_absolute_uri(reverse("upload-file", args=[token, name]))


class _SizeLimit(FileUploadHandler):
    """Stops the multipart parse as soon as one file passes TASK_UPLOAD_MAX_BYTES."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        limit = settings.TASK_UPLOAD_MAX_BYTES
        if start + len(raw_data) > limit:
            raise TooLarge(f"{self.file_name} is larger than the limit of {limit} bytes", limit=limit)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def check_before_body(request: HttpRequest, actor: Actor, agent_id: str) -> None:
    """Refuse a multipart create from its headers and path, before its body is parsed or stored.

    Role and agent first (403, 404), then the declared Content-Length (413); the parse itself stops
    at the first file over TASK_UPLOAD_MAX_BYTES.
    """
    from console.models import Role
    from tasks_app import actions

    if not actor.can(Role.MEMBER):
        raise Forbidden("Your role (viewer) may read tasks but not create or change them")
    actions.get_agent(actor, agent_id)
    limit = (
        settings.TASK_MAX_FILES * settings.TASK_UPLOAD_MAX_BYTES
        + (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)
        + MULTIPART_OVERHEAD
    )
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(
            f"The request declares {declared} bytes; at most {settings.TASK_MAX_FILES} files of "
            f"{settings.TASK_UPLOAD_MAX_BYTES} bytes each are accepted",
            limit=limit,
        )
    request.upload_handlers.insert(0, _SizeLimit(request))


def save_uploads(request: HttpRequest, actor: Actor, files: list[UploadedFile]) -> list[Upload]:
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
            url = link(request, actor.organization_id, stored)
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


def _refusal(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


def _expired_link_owner(request: HttpRequest, token: str) -> dict[str, Any] | JsonResponse:
    """An expired link still opens for the organization's own API key (x-api-key)."""
    from console.access import actor_for_key

    ref = _signer().unsign_object(token)  # the signature was valid: only its age failed
    if not request.headers.get("x-api-key"):
        return _refusal(
            403, "This file link has expired: fetch the task again, or send the organization's x-api-key"
        )
    try:
        actor = actor_for_key(request.headers["x-api-key"])
    except TaskApiError as exc:
        return _refusal(exc.status_code, exc.message)
    if actor.organization_id != ref.get("o"):
        return _refusal(404, "File not found")
    return ref


@require_safe
def download(request: HttpRequest, token: str, name: str) -> HttpResponse:
    """Serve an uploaded file as a download, never as a page on our origin."""
    try:
        ref = _signer().unsign_object(token, max_age=settings.TASK_UPLOAD_LINK_MAX_AGE)
    except signing.SignatureExpired:
        ref = _expired_link_owner(request, token)
        if isinstance(ref, JsonResponse):
            return ref
    except signing.BadSignature:
        return _refusal(404, "File not found")
    stored = str(ref.get("p") or "")
    if posixpath.basename(stored) != name or not default_storage.exists(stored):
        return _refusal(404, "File not found")
    response = FileResponse(
        default_storage.open(stored, "rb"),
        as_attachment=True,
        filename=name,
        content_type="application/octet-stream",  # never script, style or a page, whatever the name says
    )
    for header, value in SERVED_HEADERS.items():
        response[header] = value
    return response
