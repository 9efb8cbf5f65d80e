"""A tiny static HTTP file server on a free 127.0.0.1 port, plus small valid test payloads.

It serves given bytes at given paths with given content types from a background thread
(`http.server.ThreadingHTTPServer`), counting hits::

    from tests.tools.file_server import FileServer, small_pdf, tiny_png

    with FileServer({"/cat.png": tiny_png(), "/report.pdf": small_pdf("Quarterly revenue: 42")}) as files:
        files.url("/cat.png")            # "http://127.0.0.1:<port>/cat.png"
        files.add("/data.csv", b"a,b\\n1,2\\n")                       # content type from the extension
        files.add("/raw", b"...", content_type="application/octet-stream", headers={"x-a": "1"})
        files.add("/gone", b"nope", status=404)
        files.hits["/cat.png"]           # GET/HEAD count per path (unknown paths too)
        files.requests                   # [(method, path, headers)] in arrival order

Payloads: `tiny_png(width=1, height=1, rgb=(255, 0, 0))` (a valid PNG), `small_pdf(text)` (a valid
one-page PDF whose text pypdf extracts), `sample_csv()`, `sample_txt()`. Query strings are ignored
when matching paths. Unknown paths get 404.
"""

from __future__ import annotations

import mimetypes
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FileServer", "ServedFile", "sample_csv", "sample_txt", "small_pdf", "tiny_png"]

_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": "application/pdf",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


def guess_type(path: str) -> str:
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot >= 0 else ""
    return _TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass
class ServedFile:
    data: bytes
    content_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class FileServer:
    """The static file server. `files` maps a path to bytes, or to `(bytes, content_type)`."""

    def __init__(
        self,
        files: Mapping[str, bytes | tuple[bytes, str]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._files: dict[str, ServedFile] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        for path, value in (files or {}).items():
            if isinstance(value, tuple):
                self.add(path, value[0], content_type=value[1])
            else:
                self.add(path, value)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(
        self,
        path: str,
        data: bytes | str,
        content_type: str | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Serve `data` at `path`; returns its URL (usable before `start()` only once the port is known)."""
        if not path.startswith("/"):
            path = "/" + path
        if isinstance(data, str):
            data = data.encode()
        with self._lock:
            self._files[path] = ServedFile(
                data, content_type or guess_type(path), status, dict(headers or {})
            )
        return self.url(path)

    def remove(self, path: str) -> None:
        with self._lock:
            self._files.pop(path, None)

    def get(self, path: str) -> ServedFile | None:
        with self._lock:
            return self._files.get(path)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path if path.startswith('/') else '/' + path}"

    def reset_counts(self) -> None:
        with self._lock:
            self.hits.clear()
            self.requests.clear()

    def _record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.hits[path] += 1
            self.requests.append((method, path, headers))

    def start(self) -> FileServer:
        if self._httpd is not None:
            return self
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, with_body: bool) -> None:
                path = self.path.split("?", 1)[0].split("#", 1)[0]
                server._record(self.command, path, {k.lower(): v for k, v in self.headers.items()})
                served = server.get(path)
                if served is None:
                    served = ServedFile(b"not found\n", "text/plain; charset=utf-8", 404)
                self.send_response(served.status)
                self.send_header("Content-Type", served.content_type)
                self.send_header("Content-Length", str(len(served.data)))
                for k, v in served.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if with_body:
                    self.wfile.write(served.data)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"file-server-{id(self):x}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Payloads


def tiny_png(width: int = 1, height: int = 1, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A valid RGB PNG of one color."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def small_pdf(text: str | list[str] = "Hello from the test PDF.") -> bytes:
    """A valid one-page PDF (Helvetica text, one line per item); pypdf's `extract_text()` returns the text."""
    lines = [text] if isinstance(text, str) else list(text)
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for i, line in enumerate(lines):
        ops.append(f"({_pdf_escape(line)}) Tj" if i == 0 else f"T* ({_pdf_escape(line)}) Tj")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode() + b"0000000000 65535 f \n"
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def sample_csv() -> bytes:
    return b"name,qty,price\nwidget,3,2.50\ngadget,1,10.00\n"


def sample_txt() -> bytes:
    return "Plain text file.\nSecond line: caf\u00e9.\n".encode()
