"""Integer row ids from URLs and query strings: anything but a positive 64-bit integer is no id."""

from __future__ import annotations

from typing import Any

MAX_ID = 2**63 - 1  # the database's integer; a larger Python int would be an OverflowError (a 500)


def row_id(value: Any) -> int:
    """The id `value` names, or ValueError (callers answer 404 or 400)."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_ID:
        raise ValueError(f"not an id: {text[:40]!r}")
    return int(text)
