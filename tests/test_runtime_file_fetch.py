"""The runtime fetches and sorts a task's files with the client's one fetcher and categoriser: the
time budget holds for a server that drips, credentials in a URL are never sent, and attachments
are sorted by their mime type as the SDK does (xpander-wire.md section 3.3)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks_app.runtime import files


class Dripper:
    """Serves `size` bytes on 127.0.0.1, one every `every` seconds (each read is quick, the whole is not)."""

    def __init__(self, size: int, every: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    for _ in range(size):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:
                    pass  # the client gave up, as it should

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow.txt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_it_stops_a_download_that_outlasts_the_time_budget(monkeypatch):
    monkeypatch.setattr(files, "FETCH_TIMEOUT", 1.0)
    server = Dripper(size=25, every=0.2)  # 5 s in all, a byte every 0.2 s
    try:
        started = time.monotonic()
        with pytest.raises(files.FetchRefused, match=r"slow\.txt: took longer than 1\.0s"):
            await files.fetch(server.url)
        assert time.monotonic() - started < 3
    finally:
        server.close()


async def test_it_never_sends_credentials_written_in_a_url(file_server):
    url = file_server.url("/data.csv").replace("http://", "http://user:hunter2@")
    file_server.reset_counts()
    with pytest.raises(files.FetchRefused, match="credentials are not fetched"):
        await files.fetch(url)
    assert file_server.requests == []


@pytest.mark.parametrize(
    ("mime", "category"),
    [
        ("application/msword", "document"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "document"),
        ("application/pdf; charset=binary", "pdf"),
        ("text/csv; charset=utf-8", "text"),
        ("audio/mpeg", "other"),  # passed by URL: the runtime transcribes nothing
    ],
)
def test_it_sorts_an_attachment_by_its_mime_type(mime, category):
    assert files.category("https://files.example.com/download?id=7", mime=mime) == category


def test_it_sorts_by_extension_when_nothing_else_is_known():
    assert [
        files.category(f"https://e.example/f{ext}?x=.png") for ext in (".PNG", ".pdf", ".md", ".mp4")
    ] == [
        "image",
        "pdf",
        "text",
        "other",
    ]
