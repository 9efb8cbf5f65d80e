"""Handing a task's files to the model, sorted as xpander-wire.md section 3.3 describes.

Images go as images, PDFs as documents (or their text, when the model takes no PDFs),
human-readable files are inlined as text within the same truncation budget as the SDK, and the
rest are passed by URL with a note. The sorting and the fetching are the client's (categories.py,
safe_fetch.py): bounded in size and time, redirects re-checked, and only to addresses the egress
guard allows (internal ones only with OUTBOUND_ALLOWLIST).
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field

from console import outbound
from tasks_app.client.categories import categorize, sniff_image
from tasks_app.client.safe_fetch import AllowlistGuard, Fetched, FetchError, asafe_fetch

PER_FILE_CHARS = 8_000
TOTAL_CHARS = 24_000
MAX_BYTES = 15 * 1024 * 1024
IMAGE_MAX_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT = 10.0
FetchRefused = FetchError  # a file URL we will not or could not fetch; the message names the URL


def category(url: str, kind: str | None = None, mime: str | None = None) -> str:
    """image, pdf, document, text or other: what the runtime does with a file (audio and video by URL)."""
    found = categorize(url, kind, mime)
    return {"readable": "text", "audio": "other", "video": "other"}.get(found, found)


async def fetch(url: str, limit: int = MAX_BYTES) -> Fetched:
    """GET a URL within the limits; every hop, redirects included, is checked against OUTBOUND_ALLOWLIST."""
    return await asafe_fetch(
        url, max_bytes=limit, timeout=FETCH_TIMEOUT, guard=AllowlistGuard(outbound.allowlist())
    )


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

    async def get(url: str, limit: int = MAX_BYTES) -> Fetched:
        if url in stored:  # uploaded with the task: read from storage, not over the network
            from tasks_app.uploads import read

            return Fetched(url, await asyncio.to_thread(read, stored[url]), "", "utf-8")
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
                data = (await get(url, IMAGE_MAX_BYTES)).content
                sniffed = sniff_image(data)
                if sniffed is None:
                    raise FetchRefused(f"{url}: not a PNG, JPEG, GIF or WEBP image")
                out.images.append((url, data, sniffed[1]))
            elif kind == "pdf":
                data = (await get(url)).content
                if not data.startswith(b"%PDF-"):
                    raise FetchRefused(f"{url}: not a PDF")
                if native_pdf:
                    out.documents.append((url, data))
                else:
                    contents.append({"url": url, "content": await asyncio.to_thread(pdf_text, data)})
            elif kind == "text":
                got = await get(url)
                try:
                    decoded = got.content.decode(got.charset, errors="replace")
                except LookupError:
                    decoded = got.content.decode("utf-8", errors="replace")
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
