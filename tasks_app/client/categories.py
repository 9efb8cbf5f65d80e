"""Which kind of file a task's URL is (xpander-wire.md section 3.3), for the client and the runtime.

The attachment's `kind` first, then its mime type, then the extension of the URL path. No Django
and no HTTP here: the server's runtime sorts a task's files with the same rules as the client.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp"}
PDF_EXTS = {".pdf"}
DOCUMENT_EXTS = {
    ".docx", ".doc", ".docm", ".xlsx", ".xls", ".xlsm", ".xlsb", ".pptx", ".ppt", ".pptm", ".pot",
    ".pps", ".ppsx", ".odt", ".ods", ".odp", ".rtf", ".epub", ".pages", ".key", ".numbers",
}  # fmt: skip
READABLE_EXTS = {
    ".svg", ".txt", ".csv", ".json", ".xml", ".html", ".htm", ".md", ".rst", ".yaml", ".yml", ".py",
    ".js", ".ts", ".java", ".c", ".cpp", ".h", ".cs", ".go", ".rb", ".php", ".sh", ".tsv", ".log",
    ".ini", ".toml", ".tex", ".ipynb", ".eml",
}  # fmt: skip
AUDIO_EXTS = {".mp3", ".wav", ".m4a", ".ogg", ".flac", ".aac", ".opus"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpeg", ".mpg", ".flv", ".wmv", ".3gp"}
DOCUMENT_MIMES = {
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/rtf",
    "application/epub+zip",
}
KIND_TO_CATEGORY = {
    "image": "image",
    "pdf": "pdf",
    "document": "document",
    "text": "readable",
    "audio": "audio",
    "video": "video",
    "archive": "other",
}
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"\xff\xd8\xff", "jpeg", "image/jpeg"),
    (b"GIF87a", "gif", "image/gif"),
    (b"GIF89a", "gif", "image/gif"),
)


def extension(url: str) -> str:
    return posixpath.splitext(urlsplit(url).path)[1].lower()


def categorize(url: str, kind: str | None = None, mime: str | None = None) -> str:
    """image | pdf | document | readable | audio | video | other: the kind, the mime, the extension."""
    if kind in KIND_TO_CATEGORY:
        return KIND_TO_CATEGORY[kind]
    mime = (mime or "").split(";", 1)[0].strip().lower()
    if mime:
        if (
            mime == "image/svg+xml"
            or mime.startswith("text/")
            or mime in {"application/json", "application/xml"}
        ):
            return "readable"
        if mime.startswith("image/"):
            return "image"
        for prefix in ("audio", "video"):
            if mime.startswith(prefix + "/"):
                return prefix
        if mime == "application/pdf":
            return "pdf"
        if mime in DOCUMENT_MIMES or mime.startswith("application/vnd.openxmlformats-officedocument."):
            return "document"
        if mime.startswith("application/vnd.oasis.opendocument."):
            return "document"
    ext = extension(url)
    for exts, name in (
        (IMAGE_EXTS, "image"),
        (PDF_EXTS, "pdf"),
        (DOCUMENT_EXTS, "document"),
        (READABLE_EXTS, "readable"),
        (AUDIO_EXTS, "audio"),
        (VIDEO_EXTS, "video"),
    ):
        if ext in exts:
            return name
    return "other"


def sniff_image(content: bytes) -> tuple[str, str] | None:
    """(format, media type) from an image's first bytes: PNG, JPEG, GIF or WEBP, else None."""
    for signature, fmt, mime in IMAGE_SIGNATURES:
        if content.startswith(signature):
            return fmt, mime
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "webp", "image/webp"
    return None
