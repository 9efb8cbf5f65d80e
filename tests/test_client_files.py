"""A task's files for a model: readable contents, images, PDFs and to_message(), fetched from a
loopback HTTP server the test runs (allowed with XPANDER_INTERNAL_FETCH_ALLOWLIST)."""

from __future__ import annotations

import io
import json
import struct
import threading
import zipfile
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks_app.client import File, Image, Tasks
from tasks_app.client.attachments import DOC_UNREADABLE_NOTE, READ_ERROR
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def docx(*paragraphs: str) -> bytes:
    ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(
            "word/document.xml", f'<w:document xmlns:w="{ns}"><w:body>{body}</w:body></w:document>'
        )
    return buffer.getvalue()


PNG = png_1x1()
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
FILES = {
    "/data.csv": ("text/csv", b"a,b\n1,2\n"),
    "/notes.txt": ("text/plain; charset=latin-1", "caf\u00e9 notes".encode("latin-1")),
    "/report.docx": ("application/octet-stream", docx("Quarterly report", "Revenue grew.")),
    "/old.doc": ("application/msword", b"\xd0\xcf\x11\xe0 binary"),
    "/pic.png": ("image/png", PNG),
    "/fake.png": ("image/png", b"<html>not an image</html>"),
    "/scan.pdf": ("application/pdf", PDF),
    "/bundle.zip": ("application/zip", b"PK\x03\x04"),
    **{f"/big{i}.md": ("text/markdown", (str(i) * 10_000).encode()) for i in range(4)},
}


class FileServer:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] += 1
                if self.path == "/moved.csv":
                    self.send_response(302)
                    self.send_header("Location", "/data.csv")
                    self.end_headers()
                    return
                content_type, body = FILES.get(self.path, ("text/plain", b""))
                self.send_response(200 if self.path in FILES else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture(scope="module")
def files():
    server = FileServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture
def setup(daphne_server, monkeypatch):
    monkeypatch.setenv("XPANDER_INTERNAL_FETCH_ALLOWLIST", "127.0.0.1")
    return make_setup(daphne_server)


def create(setup, files, prompt: str, *paths: str):
    return Tasks(setup.configuration).create(
        setup.agent["id"], prompt=prompt, file_urls=[files.url(p) for p in paths]
    )


def stamp(task) -> str:
    return f"\n\nMessage timestamp (UTC): {task.created_at:%Y-%m-%d %H:%M}"


def test_readable_files_and_the_message(setup, files):
    task = create(
        setup, files, "Summarise", "/data.csv", "/notes.txt", "/report.docx", "/old.doc", "/bundle.zip"
    )
    readable = task.get_human_readable_files()
    assert readable == [
        {"url": files.url("/data.csv"), "content": "a,b\n1,2\n"},
        {"url": files.url("/notes.txt"), "content": "caf\u00e9 notes"},
        {"url": files.url("/report.docx"), "content": "Quarterly report\nRevenue grew."},
        {"url": files.url("/old.doc"), "content": DOC_UNREADABLE_NOTE},
    ]
    urls = [files.url(p) for p in ("/data.csv", "/notes.txt", "/report.docx", "/old.doc", "/bundle.zip")]
    expected = (
        "Summarise\nFiles: " + ", ".join(urls) + "\nFiles contents:"
        + "".join("\n" + json.dumps(item) for item in readable)
        + "\nAttachment notes:\n- these attachments cannot be read directly and their content is NOT included; "
        "do not guess their contents - fetch them via your tools/workspace if you need them: " + urls[-1]
        + stamp(task)
    )  # fmt: skip
    assert task.to_message() == expected
    assert task.to_message(with_timestamp=False) == expected.removesuffix(stamp(task))
    assert files.hits["/bundle.zip"] == 0  # nothing to read there: not fetched


def test_truncation_per_file_and_in_total(setup, files):
    task = create(setup, files, "Read these", "/big0.md", "/big1.md", "/big2.md", "/big3.md")
    contents = [item["content"] for item in task.get_human_readable_files()]
    for i, content in enumerate(contents[:3]):
        assert (
            content
            == str(i) * 8_000
            + f"\n... [truncated: 10,000 chars total - full file at {files.url(f'/big{i}.md')}]"
        )
    assert contents[3] == f"\n... [truncated: 10,000 chars total - full file at {files.url('/big3.md')}]"


def test_images_and_pdfs(setup, files):
    task = create(setup, files, "Look", "/pic.png", "/fake.png", "/scan.pdf", "/data.csv")
    [image] = task.get_images()
    assert isinstance(image, Image)  # agno is not installed here: the client's own type
    assert (image.url, image.content, image.mime_type, image.format) == (
        files.url("/pic.png"),
        PNG,
        "image/png",
        "png",
    )
    [pdf] = task.get_files()
    assert isinstance(pdf, File)
    assert (pdf.content, pdf.mime_type, pdf.filename) == (PDF, "application/pdf", "scan.pdf")
    hits = dict(files.hits)
    assert task.get_images() == [image] and dict(files.hits) == hits  # fetched once, then kept
    message = task.to_message()
    assert f"- {files.url('/fake.png')}: image not attached (not a PNG, JPEG, GIF or WEBP image)" in message
    assert message.startswith(
        "Look\nFiles: " + ", ".join(files.url(p) for p in ("/pic.png", "/fake.png", "/scan.pdf", "/data.csv"))
    )


async def test_the_async_forms(setup, files):
    task = await Tasks(setup.configuration).acreate(
        setup.agent["id"],
        prompt="Async",
        file_urls=[files.url(p) for p in ("/pic.png", "/scan.pdf", "/moved.csv")],
    )
    assert [i.content for i in await task.aget_images()] == [PNG]
    assert [f.content for f in await task.aget_files()] == [PDF]
    assert await task.aget_human_readable_files() == [
        {"url": files.url("/moved.csv"), "content": "a,b\n1,2\n"}
    ]
    message = await task.ato_message()
    assert json.dumps({"url": files.url("/moved.csv"), "content": "a,b\n1,2\n"}) in message
    assert message.endswith(stamp(task))


def test_a_json_prompt_gets_no_file_list_or_timestamp(setup, files):
    task = create(setup, files, '{"report": "q4"}', "/data.csv")
    assert task.to_message() == '{"report": "q4"}\nFiles contents:\n' + json.dumps(
        {"url": files.url("/data.csv"), "content": "a,b\n1,2\n"}
    )


def test_loopback_is_refused_without_the_allowlist(setup, files, monkeypatch):
    monkeypatch.delenv("XPANDER_INTERNAL_FETCH_ALLOWLIST")
    before = dict(files.hits)
    task = create(setup, files, "Guarded", "/data.csv", "/pic.png", "/scan.pdf")
    assert task.get_human_readable_files() == [{"url": files.url("/data.csv"), "content": READ_ERROR}]
    assert task.get_images() == []
    assert task.get_files() == []
    assert dict(files.hits) == before  # refused before any request was made
    assert "XPANDER_INTERNAL_FETCH_ALLOWLIST" in task.to_message()


@pytest.mark.parametrize("form", ["::ffff:127.0.0.2", "::127.0.0.2", "::ffff:0:7f00:2", "64:ff9b::7f00:2"])
def test_ipv6_forms_embedding_a_loopback_ipv4_are_refused(form, monkeypatch):
    import ipaddress

    from tasks_app.client.safe_fetch import Policy

    monkeypatch.setenv("XPANDER_INTERNAL_FETCH_ALLOWLIST", "")
    assert "127.0.0.2" in (Policy.from_env().refusal(form, ipaddress.ip_address(form)) or "")
