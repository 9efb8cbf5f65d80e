"""The log format: every line, traceback included, with the query strings and credentials of its
URLs taken out.

Why: libraries log the URLs they were handed or sent to. The MCP client logs a redirect's whole
`Location` at WARNING, and a model or MCP address, or a redirect target, may carry a key in its query
(`?api_key=...`) or in its user part (`https://user:secret@host`). No secret may reach a log line,
and the libraries' messages cannot be changed, so the line is cleaned as it is formatted: the URL
keeps its scheme, host and path (enough to tell which server it was) and loses the rest.
"""

from __future__ import annotations

import logging
import re

_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#@'\"<>]*@)?(?P<rest>[^\s?#'\"<>]*)"
    r"(?P<query>\?[^\s#'\"<>]*)?(?P<fragment>#[^\s'\"<>]*)?"
)
HIDDEN = "[hidden]"


def redact_urls(text: str) -> str:
    """`text` with every URL's user part and query string (and fragment) replaced by HIDDEN."""

    def clean(m: re.Match[str]) -> str:
        userinfo = f"{HIDDEN}@" if m["userinfo"] else ""
        query = f"?{HIDDEN}" if m["query"] else ""
        fragment = f"#{HIDDEN}" if m["fragment"] else ""
        return f"{m['scheme']}{userinfo}{m['rest']}{query}{fragment}"

    return _URL.sub(clean, text)


class RedactingFormatter(logging.Formatter):
    """logging.Formatter whose output, message and traceback alike, goes through `redact_urls`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))
