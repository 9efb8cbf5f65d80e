"""Files uploaded with a task: refused from the headers and path before the body is parsed, stored,
and served only through a signed, expiring link, as a download that no browser renders on our origin."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import create_body

PAGE = b"<html><script>alert(document.cookie)</script></html>"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def upload(persona, agent_id: str, *files: tuple[str, bytes], **headers: str):
    data = {
        "body": json.dumps(create_body("see attached")),
        "files": [SimpleUploadedFile(name, content) for name, content in files],
    }
    return persona.client.post(
        f"/api/agent-execution/{agent_id}", data=data, headers={"x-api-key": persona.key, **headers}
    )


def raw_multipart(persona, agent_id: str, body: bytes):
    """A multipart request Django cannot parse (no boundary): only a refusal before parsing answers it."""
    return persona.client.post(
        f"/api/agent-execution/{agent_id}",
        data=body,
        content_type="multipart/form-data",
        headers={"x-api-key": persona.key},
    )


def stored_files(settings) -> list:
    return [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()] if settings.MEDIA_ROOT.exists() else []


def test_it_serves_an_upload_as_an_attachment_that_never_renders(alice, external_agent):
    r = upload(alice, external_agent.id, ("page.html", PAGE))
    assert r.status_code == 200, r.content
    url = r.json()["input"]["files"][0]
    assert "/files/" in url and url.endswith("/page.html") and "/media/" not in url
    served = alice.client.get(url)  # no API key: the link is the capability
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == PAGE
    assert served["Content-Type"] == "application/octet-stream"
    assert served["Content-Disposition"].startswith("attachment;")
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_a_tampered_or_renamed_link_is_not_found(alice, external_agent):
    url = upload(alice, external_agent.id, ("a.txt", b"x")).json()["input"]["files"][0]
    prefix, token, name = url.rsplit("/", 2)
    assert alice.client.get(f"{prefix}/{token[:-2]}xx/{name}").status_code == 404
    assert alice.client.get(f"{prefix}/{token}/other.txt").status_code == 404
    assert alice.client.get(f"/media/{name}").status_code == 404


def test_an_expired_link_opens_only_with_the_organizations_key(alice, charlie, external_agent, settings):
    url = upload(alice, external_agent.id, ("a.txt", b"mine")).json()["input"]["files"][0]
    settings.TASK_UPLOAD_LINK_MAX_AGE = -1
    r = alice.client.get(url)
    assert r.status_code == 403 and "expired" in r.json()["detail"]
    assert charlie.client.get(url, headers={"x-api-key": charlie.key}).status_code == 404
    assert alice.client.get(url, headers={"x-api-key": "atc_wrong"}).status_code == 401
    r = alice.client.get(url, headers={"x-api-key": alice.key})
    assert r.status_code == 200 and b"".join(r.streaming_content) == b"mine"


def test_a_viewer_is_refused_before_the_body_is_parsed(vera, external_agent, settings):
    assert raw_multipart(vera, external_agent.id, b"garbage" * 100).status_code == 403
    assert upload(vera, external_agent.id, ("a.txt", b"x")).status_code == 403
    assert stored_files(settings) == []


def test_another_organizations_agent_is_not_found_before_the_body_is_parsed(charlie, external_agent):
    assert raw_multipart(charlie, external_agent.id, b"garbage" * 100).status_code == 404


def test_an_oversized_declared_length_is_refused_before_the_body_is_parsed(alice, external_agent, settings):
    settings.TASK_MAX_FILES = 1
    settings.TASK_UPLOAD_MAX_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = raw_multipart(alice, external_agent.id, b"x" * 200_000)
    assert r.status_code == 413 and "declares 200000 bytes" in r.json()["detail"]


def test_the_parse_stops_at_the_first_file_over_the_limit(alice, external_agent, settings):
    settings.TASK_UPLOAD_MAX_BYTES = 1000
    r = upload(alice, external_agent.id, ("big.txt", b"x" * 5000))
    assert r.status_code == 413 and "big.txt is larger than the limit of 1000 bytes" in r.json()["detail"]
    assert stored_files(settings) == []
