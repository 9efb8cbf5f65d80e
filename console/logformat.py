"""The log format: every line, traceback included, with the query strings and credentials of its
URLs taken out.

Why: libraries log the URLs they were handed or sent to. The MCP client logs a redirect's whole
`Location` at WARNING, and a model or MCP address, or a redirect target, may carry a key in its query
(`?api_key=...`) or in its user part (`https://user:secret@host`), and the libraries' messages
cannot be changed, so the line is cleaned as it is formatted: the URL keeps its scheme, host and
path (enough to tell which server it was) and loses the rest. A key in a URL's path (a webhook-style
address) is not recognised here: the task's known secrets are masked where they are stored
(console/masking.py), and the HTTP clients' own request lines stay off (settings.LOGGING).
"""

from __future__ import annotations

import logging
import re
from typing import Any

# A scheme of at most 32 characters not preceded by another scheme character (no backtracking over
# a long dotted run: linear in the line); a user part up to the authority's last "@" (a raw "@" in
# a password hides all of it); the rest of the authority and the path; then the query and fragment.
_URL = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)"
    r"(?:(?P<userinfo>[^\s/?#'\"<>]*)@)?(?P<rest>[^\s?#'\"<>]*)"
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
    """logging.Formatter whose output, message and traceback alike, goes through `redact_urls`.

    The traceback is cleaned as it is formatted too: logging caches it on the record
    (`exc_text`), where any other handler would find it.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))

    def formatException(self, ei: Any) -> str:
        return redact_urls(super().formatException(ei))
