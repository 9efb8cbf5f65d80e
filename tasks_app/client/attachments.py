"""A task's files for a model: categorised by kind, fetched under the SSRF guard, turned into
Images, PDF Files, readable text and the prompt that `to_message()` builds (xpander-wire.md 3.3).

Planning and building are pure; only the fetching has a sync and an async form.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from tasks_app.client import documents
from tasks_app.client.categories import categorize, extension, sniff_image
from tasks_app.client.models.media import make_file, make_image
from tasks_app.client.models.task import AgentExecutionInput, AttachmentRef
from tasks_app.client.safe_fetch import Fetched, FetchError, asafe_fetch, safe_fetch

READABLE_MAX_BYTES = 15 * 1024 * 1024
IMAGE_MAX_BYTES = 5 * 1024 * 1024
PDF_MAX_BYTES = 30 * 1024 * 1024
MAX_IMAGES = 20
FETCH_TIMEOUT = 10.0
INLINE_FILE_CHARS = 8_000
INLINE_TOTAL_CHARS = 24_000
FETCH_WORKERS = 4

READ_ERROR = "Error: file could not be read"
DOC_UNREADABLE_NOTE = (
    "No text could be extracted from this attachment, so its contents are NOT included here; "
    "fetch it via your tools/workspace if you need them"
)


def filename(url: str) -> str | None:
    return unquote(posixpath.basename(urlsplit(url).path)) or None


def category_of(url: str, ref: AttachmentRef | None = None) -> str:
    """image | pdf | document | readable | audio | video | other: the ref's kind, then its mime, then the extension."""
    if ref is None:
        return categorize(url)
    return categorize(url, ref.kind, ref.mime)


@dataclass
class Plan:
    """The task's URLs by category, in their original order (attachments win over input.files)."""

    urls: list[str]
    categories: dict[str, str]
    disable_injection: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, task_input: AgentExecutionInput, disable_injection: bool) -> Plan:
        if task_input.attachments:
            refs = {a.url: a for a in task_input.attachments}
            urls = list(refs)
        else:
            refs, urls = {}, list(task_input.files)
        plan = cls(urls, {u: category_of(u, refs.get(u)) for u in urls}, disable_injection)
        unreadable = plan.of_category("other")
        if unreadable:
            plan.notes.append(
                "these attachments cannot be read directly and their content is NOT included; do not guess "
                "their contents - fetch them via your tools/workspace if you need them: "
                + ", ".join(unreadable)
            )
        for url in plan.of_category("audio", "video"):
            plan.notes.append(f"{url}: could not be converted to text, so its content is NOT included")
        return plan

    def of_category(self, *names: str) -> list[str]:
        return [u for u in self.urls if self.categories[u] in names]


# ---- fetching ----------------------------------------------------------------------------------

FetchResult = Fetched | FetchError


def _fetch_one(url: str, max_bytes: int) -> FetchResult:
    try:
        return safe_fetch(url, max_bytes=max_bytes, timeout=FETCH_TIMEOUT)
    except FetchError as exc:
        return exc


async def _afetch_one(url: str, max_bytes: int) -> FetchResult:
    try:
        return await asafe_fetch(url, max_bytes=max_bytes, timeout=FETCH_TIMEOUT)
    except FetchError as exc:
        return exc


def fetch_many(urls: Sequence[str], max_bytes: int) -> list[FetchResult]:
    if len(urls) <= 1:
        return [_fetch_one(u, max_bytes) for u in urls]
    with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(urls))) as pool:
        return list(pool.map(lambda u: _fetch_one(u, max_bytes), urls))


async def afetch_many(urls: Sequence[str], max_bytes: int) -> list[FetchResult]:
    return list(await asyncio.gather(*(_afetch_one(u, max_bytes) for u in urls)))


# ---- building ----------------------------------------------------------------------------------


def truncate(items: list[dict[str, str]]) -> list[dict[str, str]]:
    """Clip contents to 8,000 characters each and 24,000 in all, saying where the full file is."""
    remaining = INLINE_TOTAL_CHARS
    out = []
    for item in items:
        content = item.get("content")
        if content is None:
            out.append(item)
            continue
        cap = min(INLINE_FILE_CHARS, max(0, remaining))
        if len(content) > cap:
            content = (
                content[:cap]
                + f"\n... [truncated: {len(content):,} chars total - full file at {item['url']}]"
            )
        remaining -= min(len(item["content"]), cap)
        out.append({"url": item["url"], "content": content})
    return out


def readable_text(url: str, category: str, result: FetchResult) -> str:
    if isinstance(result, FetchError):
        return READ_ERROR
    if category == "document":
        return documents.extract_text(result.content, extension(url)) or DOC_UNREADABLE_NOTE
    try:
        return result.content.decode(result.charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return result.content.decode("utf-8", errors="replace")


def readable_files(plan: Plan, results: list[FetchResult]) -> list[dict[str, str]]:
    urls = plan.of_category("readable", "document")
    if plan.disable_injection:
        return [{"url": u} for u in urls]
    return truncate(
        [
            {"url": u, "content": readable_text(u, plan.categories[u], r)}
            for u, r in zip(urls, results, strict=True)
        ]
    )


def image_urls(plan: Plan) -> tuple[list[str], list[str]]:
    """The image URLs to fetch, and notes for those that will not be attached."""
    urls = plan.of_category("image")
    if plan.disable_injection and urls:
        return [], [f"{len(urls)} image(s) not attached: attachment injection is disabled for this task"]
    notes = []
    if len(urls) > MAX_IMAGES:
        notes.append(
            f"{len(urls) - MAX_IMAGES} additional image(s) beyond the per-message limit ({MAX_IMAGES}) "
            "listed above but not attached; fetch via your tools/workspace using the URLs"
        )
    return urls[:MAX_IMAGES], notes


def images(urls: list[str], results: list[FetchResult]) -> tuple[list[Any], list[str]]:
    out, notes = [], []
    for url, result in zip(urls, results, strict=True):
        if isinstance(result, FetchError):
            notes.append(f"{url}: image not attached ({result})")
            continue
        if result.content_type and not (
            result.content_type.startswith("image/") or result.content_type.endswith("octet-stream")
        ):
            notes.append(f"{url}: image not attached (the server sent {result.content_type})")
            continue
        sniffed = sniff_image(result.content)
        if sniffed is None:
            notes.append(f"{url}: image not attached (not a PNG, JPEG, GIF or WEBP image)")
            continue
        out.append(make_image(url, result.content, *sniffed))
    return out, notes


def pdf_files(urls: list[str], results: list[FetchResult]) -> tuple[list[Any], list[str]]:
    out, notes = [], []
    for url, result in zip(urls, results, strict=True):
        if isinstance(result, FetchError):
            notes.append(f"{url}: PDF not attached ({result})")
        elif result.content.lstrip()[:5] != b"%PDF-":
            notes.append(f"{url}: not attached, the URL did not return a PDF")
        else:
            out.append(make_file(url, result.content, "application/pdf", filename(url)))
    return out, notes


def is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict | list)
    except ValueError:
        return False


def message(
    text: str | None,
    urls: list[str],
    readable: list[dict[str, str]],
    notes: list[str],
    created_at: datetime | None,
    with_timestamp: bool,
) -> str:
    """The model's input: prompt, file URLs, readable contents, attachment notes, timestamp."""
    msg = text or ""
    json_input = is_json(msg)
    if urls and not json_input:
        msg += ("\n" if msg else "") + "Files: " + ", ".join(urls)
    contents = [item for item in readable if "content" in item]
    if contents:
        msg += "\nFiles contents:"
        for item in contents:
            msg += "\n" + json.dumps({"url": item["url"], "content": item["content"]})
    if notes:
        msg += "\nAttachment notes:" + "".join(f"\n- {note}" for note in notes)
    if with_timestamp and not json_input and created_at is not None:
        stamp = (created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)).astimezone(UTC)
        msg += f"\n\nMessage timestamp (UTC): {stamp:%Y-%m-%d %H:%M}"
    return msg
