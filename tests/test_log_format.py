"""Log lines never carry the query strings or credentials of the URLs in them (console/logformat.py)."""

from __future__ import annotations

import logging

import httpx

from console.logformat import HIDDEN, RedactingFormatter, redact_urls


def configured_formatter() -> logging.Formatter:
    """The formatter settings.LOGGING gives the server's one handler."""
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h.formatter, RedactingFormatter)]
    return handler.formatter


def record(msg: str, *args: object, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("mcp.client.streamable_http", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_line_keeps_the_server_and_path_and_loses_the_rest():
    line = configured_formatter().format(
        record(
            "Redirect to %s not followed", "https://bob:pw-123@mcp.example.com/v1/mcp/?api_key=sk-123&x=1#t"
        )
    )
    assert line.endswith(
        f"Redirect to https://{HIDDEN}@mcp.example.com/v1/mcp/?{HIDDEN}#{HIDDEN} not followed"
    )
    for secret in ("pw-123", "sk-123", "bob"):
        assert secret not in line


def test_a_traceback_loses_them_too():
    """httpx puts the request's whole URL in an HTTPStatusError's message, which a traceback repeats."""
    request = httpx.Request("GET", "http://127.0.0.1:9/v1/models?key=sk-in-the-query")
    try:
        httpx.Response(401, request=request).raise_for_status()
    except httpx.HTTPStatusError:
        import sys

        line = configured_formatter().format(record("model call failed", exc_info=sys.exc_info()))
    assert "HTTPStatusError" in line and f"http://127.0.0.1:9/v1/models?{HIDDEN}" in line
    assert "sk-in-the-query" not in line


def test_a_raw_at_sign_in_a_password_hides_all_of_it():
    assert redact_urls("redis://:p@ss@cache:6379/0 and https://medium.test/@alice/post") == (
        f"redis://{HIDDEN}@cache:6379/0 and https://medium.test/@alice/post"
    )


def test_djangos_own_handlers_are_gone():
    """Django's default config gives `django` a console handler of its own (a second, unredacted
    line under DEBUG) and mail to admins; its lines go through the server's one handler instead."""
    django_logger = logging.getLogger("django")
    assert django_logger.handlers == [] and django_logger.propagate


def test_text_without_a_url_is_left_alone():
    for text in ("no url ?a=b", "task 3 finished in 1.2 s", "path /api/x?since=3", "mailto-like a@b.c"):
        assert redact_urls(text) == text
    assert redact_urls("see https://h.test/p and 'http://h.test/q?s=1'") == (
        f"see https://h.test/p and 'http://h.test/q?{HIDDEN}'"
    )
