"""Images and files handed to a model: Agno's own classes when agno is installed, else these.

The fallback types carry the fields Agno's do (url, content bytes, mime_type, format, ...), so
code that reads them works either way.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from pydantic import BaseModel, Field


class Image(BaseModel):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    url: str | None = None
    content: bytes
    mime_type: str
    format: str | None = None


class File(BaseModel):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    url: str | None = None
    content: bytes
    mime_type: str
    filename: str | None = None
    name: str | None = None
    format: str | None = None
    size: int | None = None


@functools.cache
def agno_media() -> Any:
    """agno.media when it is installed (an optional extra), else None. Imported on first use: it is heavy."""
    try:
        import agno.media
    except ImportError:
        return None
    return agno.media


def make_image(url: str, content: bytes, fmt: str, mime_type: str) -> Any:
    media = agno_media()
    if media is not None:
        # Agno takes exactly one of url/filepath/content; the bytes are what the model needs.
        return media.Image(content=content, format=fmt, mime_type=mime_type)
    return Image(url=url, content=content, mime_type=mime_type, format=fmt)


def make_file(url: str, content: bytes, mime_type: str, filename: str | None) -> Any:
    media = agno_media()
    name = filename.rsplit(".", 1)[0] if filename else None
    fmt = filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else None
    if media is not None:
        return media.File(content=content, mime_type=mime_type, filename=filename, name=name, format=fmt)
    return File(
        url=url,
        content=content,
        mime_type=mime_type,
        filename=filename,
        name=name,
        format=fmt,
        size=len(content),
    )
