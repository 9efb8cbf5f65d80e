"""Strict JSON request bodies: what json.loads lets through but the task API cannot keep.

Python's parser accepts NaN and Infinity (not JSON, and refused by the database's JSON columns),
recurses once per nesting level (a body of `[[[[...` raises RecursionError), and decodes `\\ud800`
into a lone surrogate that can be neither encoded to UTF-8 nor stored in PostgreSQL, like NUL.
Each of those is a 400 or a 422 naming the field here, never a 500 further down.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from console.errors import BadRequest, Invalid


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"Malformed JSON body: {name} is not a JSON number")


def loads(raw: bytes | str, *, what: str = "JSON body") -> Any:
    """Parse `raw` strictly and check the result with `check`; the error names `what`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(
            f"Malformed {what}: nested deeper than {settings.API_JSON_MAX_DEPTH} levels"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed {what}: {exc}") from None
    check(data, what=what)
    return data


def field_name(path: tuple[Any, ...]) -> str:
    """`input.text`, `[0].data`: list indexes in brackets, as parse() names fields."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "body"


def _bad_text(value: str) -> str | None:
    """Why a string cannot be stored as text, or None when it can."""
    if value.isascii():
        return "contains a NUL character" if "\x00" in value else None
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return (
            "contains a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not valid Unicode text"
        )
    return None


def check(data: Any, *, max_depth: int | None = None, what: str = "JSON body") -> None:
    """Refuse data nested deeper than API_JSON_MAX_DEPTH, and strings that are not storable text.

    Iterative, so it cannot hit the recursion limit however deep the data is.
    """
    limit = settings.API_JSON_MAX_DEPTH if max_depth is None else max_depth
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(data, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                raise Invalid(field_name(path), problem)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > limit:
            raise BadRequest(
                f"Malformed {what}: {field_name(path)} is nested deeper than {limit} levels",
                field=field_name(path),
            )
        if isinstance(value, dict):
            for key, item in value.items():
                problem = _bad_text(key)
                if problem:
                    raise Invalid(field_name(path), f"a key {problem}")
                stack.append((item, depth + 1, (*path, key)))
        else:
            stack.extend((item, depth + 1, (*path, index)) for index, item in enumerate(value))
