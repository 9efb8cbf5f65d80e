"""REST calls: one description of a call, sent either with httpx.Client or httpx.AsyncClient.

Every failure becomes a ModuleException: an HTTP error carries the server's status and message,
a network failure names the URL it could not reach, an unexpected body says what was wrong.
"""

from __future__ import annotations

import enum
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call:
    """One REST request; `action` names it in error messages ("Failed to <action> - ...")."""

    action: str
    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def failure(self, detail: str) -> str:
        return f"Failed to {self.action} - {detail}"


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle for every short-lived client costs more than the call."""
    return httpx.create_ssl_context()


def auth_headers(cfg: Configuration, action: str) -> dict[str, str]:
    if not cfg.api_key:
        raise ModuleException(
            401, f"Failed to {action} - no API key: set XPANDER_API_KEY or pass Configuration(api_key=...)"
        )
    return {"x-api-key": cfg.api_key}


def query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _request_kwargs(cfg: Configuration, call: Call) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "headers": {**call.headers, **auth_headers(cfg, call.action)},
        "params": {k: query_value(v) for k, v in (call.params or {}).items() if v is not None},
    }
    if call.method in {"POST", "PUT", "PATCH"}:
        kwargs["json"] = call.json if call.json is not None else {}
    return kwargs


def server_message(response: httpx.Response) -> str:
    """The `detail` of our JSON errors, else the body as text."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return response.text


def network_error(call: Call, url: str, exc: httpx.HTTPError) -> ModuleException:
    status = 504 if isinstance(exc, httpx.TimeoutException) else 503
    reason = str(exc) or type(exc).__name__
    return ModuleException(status, call.failure(f"could not reach {url} ({type(exc).__name__}: {reason})"))


def _decode(call: Call, response: httpx.Response) -> Any:
    if not response.is_success:  # 3xx included: the API never redirects
        raise ModuleException(response.status_code, server_message(response))
    content_type = response.headers.get("content-type", "")
    if "application/json" not in content_type:
        raise ModuleException(
            502, call.failure(f"expected JSON from {response.url}, got {content_type or 'no content type'}")
        )
    try:
        return response.json()
    except ValueError as exc:
        raise ModuleException(502, call.failure(f"malformed JSON from {response.url}: {exc}")) from None


def send(cfg: Configuration, call: Call) -> Any:
    """Make the call synchronously and return the decoded JSON."""
    url = cfg.url(call.path)
    kwargs = _request_kwargs(cfg, call)
    try:
        with httpx.Client(timeout=cfg.timeout, verify=ssl_context()) as client:
            response = client.request(call.method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise network_error(call, url, exc) from exc
    return _decode(call, response)


async def asend(cfg: Configuration, call: Call) -> Any:
    """Make the call on the running event loop and return the decoded JSON."""
    url = cfg.url(call.path)
    kwargs = _request_kwargs(cfg, call)
    try:
        async with httpx.AsyncClient(timeout=cfg.timeout, verify=ssl_context()) as client:
            response = await client.request(call.method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise network_error(call, url, exc) from exc
    return _decode(call, response)


def parse(model: type[M], data: Any, call: Call, **context: Any) -> M:
    """Validate a response body; a body that does not fit is the server's fault (502)."""
    if not isinstance(data, dict):
        raise ModuleException(502, call.failure(f"expected a JSON object, got {type(data).__name__}"))
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ModuleException(
            502, call.failure(f"unexpected {model.__name__} from the server: {where}: {first['msg']}")
        ) from None


def parse_list(model: type[M], data: Any, call: Call) -> list[M]:
    if not isinstance(data, list):
        raise ModuleException(502, call.failure(f"expected a JSON array, got {type(data).__name__}"))
    return [parse(model, item, call) for item in data]
