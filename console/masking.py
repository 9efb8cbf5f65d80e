"""Masking of secrets before anything is written to an event or activity entry.

Two nets: values of secret-named keys are replaced wherever they appear, and any known secret
string (a task's user tokens, a model key) is replaced wherever it occurs in text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

MASK = "REDACTED"
_SECRET_KEY_RE = re.compile(
    r"(^|[_-])(authorization|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|api[_-]?key|"
    r"x-api-key|password|passwd|secret|client[_-]?secret|private[_-]?key|credentials?|bearer|cookie|"
    r"user[_-]?tokens|token)$",
    re.IGNORECASE,
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_BEARER_RE = re.compile(
    r"(?i)(\bbearer|authorization[\"']?\s*[:=]\s*[\"']?(?:token|basic|bearer))\s+[A-Za-z0-9._~+/=-]{12,}"
)


def is_secret_key(key: str) -> bool:
    """Names like api_key, X-Api-Key, accessToken or private_key (camelCase is split first).

    Short names are cached: every write masks its event and snapshot dicts key by key, and the
    names repeat (a task's fields, an event's); two regular expressions per name were ~5 % of a
    run's writes. Long ones (any key of a tool's output) are not kept.
    """
    return _secret_name(key) if len(key) <= 64 else _is_secret_name(key)


def _is_secret_name(key: str) -> bool:
    return bool(_SECRET_KEY_RE.search(_CAMEL.sub("_", key)))


_secret_name = functools.lru_cache(maxsize=4096)(_is_secret_name)


def mask(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Return a copy of `value` with secret-named fields and known secret strings replaced."""
    known = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    return _mask(value, known)


def _mask(value: Any, known: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and is_secret_key(k) and v not in (None, "", [], {}):
                out[k] = MASK if not isinstance(v, dict) else {kk: MASK for kk in v}
            else:
                out[k] = _mask(v, known)
        return out
    if isinstance(value, list | tuple):
        return [_mask(v, known) for v in value]
    if isinstance(value, str):
        for secret in known:
            if secret in value:
                value = value.replace(secret, MASK)
        return _BEARER_RE.sub(r"\1 " + MASK, value)
    return value
