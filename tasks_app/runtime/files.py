"""Handing a task's files to the model, sorted as xpander-wire.md section 3.3 describes.

Images go as images, PDFs as documents (or their text, when the model takes no PDFs),
human-readable files are inlined as text within the same truncation budget as the SDK, and the
rest are passed by URL with a note. Fetching is bounded (size, time, redirects) and goes through
the egress guard (tasks_app/runtime/outbound.py): internal addresses only with OUTBOUND_ALLOWLIST.
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlparse

import httpx2

from tasks_app.runtime import outbound

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp"}
PDF_EXT = {".pdf"}
DOCUMENT_EXT = {
    ".docx",
    ".doc",
    ".docm",
    ".xlsx",
    ".xls",
    ".xlsm",
    ".xlsb",
    ".pptx",
    ".ppt",
    ".pptm",
    ".pot",
    ".pps",
    ".ppsx",
    ".odt",
    ".ods",
    ".odp",
    ".rtf",
    ".epub",
    ".pages",
    ".key",
    ".numbers",
}
TEXT_EXT = {
    ".svg",
    ".txt",
    ".csv",
    ".json",
    ".xml",
    ".html",
    ".htm",
    ".md",
    ".rst",
    ".yaml",
    ".yml",
    ".py",
    ".js",
    ".ts",
    ".java",
    ".c",
    ".cpp",
    ".h",
    ".cs",
    ".go",
    ".rb",
    ".php",
    ".sh",
    ".tsv",
    ".log",
    ".ini",
    ".toml",
    ".tex",
    ".ipynb",
    ".eml",
}
PER_FILE_CHARS = 8_000
TOTAL_CHARS = 24_000
MAX_BYTES = 15 * 1024 * 1024
IMAGE_MAX_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT = 10.0
MAX_REDIRECTS = 5
IMAGE_MAGIC = {
    b"\x89PNG": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


class FetchRefused(Exception):
    """A file URL we will not or could not fetch; the message is safe to show the user."""


def category(url: str, kind: str | None = None, mime: str | None = None) -> str:
    """One of image, pdf, document, text, other (attachment metadata first, then the extension)."""
    kinds = {"image": "image", "pdf": "pdf", "document": "document", "text": "text", "archive": "other"}
    if kind in kinds:
        return kinds[kind]
    if mime:
        if mime.startswith("image/") and mime != "image/svg+xml":
            return "image"
        if mime == "application/pdf":
            return "pdf"
        if mime.startswith("text/") or mime in {"application/json", "application/xml", "image/svg+xml"}:
            return "text"
    path = urlparse(url).path.lower()
    ext = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    if ext in IMAGE_EXT:
        return "image"
    if ext in PDF_EXT:
        return "pdf"
    if ext in DOCUMENT_EXT:
        return "document"
    if ext in TEXT_EXT:
        return "text"
    return "other"


async def fetch(url: str, limit: int = MAX_BYTES) -> tuple[bytes, str]:
    """GET a URL within the limits; every connection, redirects included, goes through the egress guard."""
    async with outbound.client(timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            if urlparse(current).scheme not in {"http", "https"} or not urlparse(current).hostname:
                raise FetchRefused(f"{url}: only http(s) URLs can be fetched")
            try:
                request = client.build_request("GET", current)
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and response.headers.get("location"):
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise FetchRefused(f"{url}: the server answered {response.status_code}")
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body.extend(piece)
                        if len(body) > limit:
                            raise FetchRefused(f"{url}: larger than {limit // (1024 * 1024)} MB")
                    return bytes(body), response.headers.get("content-type", "")
                finally:
                    await response.aclose()
            except outbound.OutboundRefused as exc:
                raise FetchRefused(f"{url}: {exc}") from None
            except httpx2.HTTPError as exc:
                raise FetchRefused(f"{url}: {type(exc).__name__}") from None
        raise FetchRefused(f"{url}: more than {MAX_REDIRECTS} redirects")


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join((page.extract_text() or "") for page in reader.pages[:100]).strip()


def _truncate(url: str, text: str, budget: int) -> str:
    limit = min(PER_FILE_CHARS, budget)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [truncated: {len(text)} chars total - full file at {url}]"


@dataclass
class PreparedInput:
    """What the model gets: the composed text plus binary parts (images, PDFs)."""

    text: str
    images: list[tuple[str, bytes, str]] = field(default_factory=list)  # (url, data, media type)
    documents: list[tuple[str, bytes]] = field(default_factory=list)  # (url, pdf bytes)
    notes: list[str] = field(default_factory=list)


async def prepare(
    text: str,
    urls: list[str],
    attachments: list[dict],
    *,
    native_pdf: bool,
    inject: bool = True,
    uploads: dict[str, str] | None = None,
) -> PreparedInput:
    """Fetch and sort the files, and compose the message the way the SDK's to_message() does."""
    meta = {a.get("url"): a for a in attachments if a.get("url")}
    stored = uploads or {}

    async def get(url: str, limit: int = MAX_BYTES) -> tuple[bytes, str]:
        if url in stored:  # uploaded with the task: read from storage, not over the network
            from tasks_app.uploads import read

            return await asyncio.to_thread(read, stored[url]), ""
        return await fetch(url, limit)

    urls = list(dict.fromkeys([*urls, *meta]))
    out = PreparedInput(text="")
    contents: list[dict[str, str]] = []

    async def one(url: str) -> None:
        info = meta.get(url, {})
        kind = category(url, info.get("kind"), info.get("mime"))
        if not inject and kind != "other":
            out.notes.append(f"{url}: attachment injection is disabled for this task")
            return
        try:
            if kind == "image":
                data, ctype = await get(url, IMAGE_MAX_BYTES)
                media = next((m for magic, m in IMAGE_MAGIC.items() if data.startswith(magic)), None)
                if media is None:
                    raise FetchRefused(f"{url}: not a PNG, JPEG, GIF or WEBP image")
                out.images.append((url, data, media))
            elif kind == "pdf":
                data, _ = await get(url)
                if not data.startswith(b"%PDF-"):
                    raise FetchRefused(f"{url}: not a PDF")
                if native_pdf:
                    out.documents.append((url, data))
                else:
                    contents.append({"url": url, "content": await asyncio.to_thread(pdf_text, data)})
            elif kind == "text":
                data, ctype = await get(url)
                charset = "utf-8"
                if "charset=" in ctype:
                    charset = ctype.split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
                try:
                    decoded = data.decode(charset, errors="replace")
                except LookupError:
                    decoded = data.decode("utf-8", errors="replace")
                contents.append({"url": url, "content": decoded})
            elif kind == "document":
                out.notes.append(f"{url}: office documents cannot be read here; passed by URL only")
            else:
                out.notes.append(
                    f"{url}: attachments of this type cannot be read directly; passed by URL only"
                )
        except FetchRefused as exc:
            out.notes.append(f"could not read {exc}")
        except Exception as exc:  # a broken file must not fail the task, only be noted
            out.notes.append(f"could not read {url}: {type(exc).__name__}")

    await asyncio.gather(*(one(u) for u in urls))
    order = {u: i for i, u in enumerate(urls)}
    contents.sort(key=lambda c: order[c["url"]])
    out.text = compose(text, urls, contents, out.notes)
    return out


def compose(text: str, urls: list[str], contents: list[dict[str, str]], notes: list[str]) -> str:
    msg = text or ""
    try:
        is_json = isinstance(json.loads(msg), dict | list)
    except ValueError:
        is_json = False
    if not is_json and urls:
        msg += ("\n" if msg else "") + "Files: " + ", ".join(urls)
    if contents:
        msg += "\nFiles contents:"
        budget = TOTAL_CHARS
        for item in contents:
            if budget <= 0:
                break
            body = _truncate(item["url"], item["content"], budget)
            budget -= min(len(item["content"]), PER_FILE_CHARS)
            msg += "\n" + json.dumps({"url": item["url"], "content": body})
    if notes:
        msg += "\nAttachment notes:" + "".join(f"\n- {n}" for n in notes)
    return msg
