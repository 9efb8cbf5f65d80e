"""How a run fails: the exceptions that end it and the message a user can act on for each.

Remote error bodies stay out of results (an error page is an oracle); the operator's log has them.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TypeVar

from console import outbound
from console.masking import mask
from tasks_app.models import Status, Task
from tasks_app.runtime import llm

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseException)
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TaskFailure(Exception):
    """Ends the task as failed with a message the user can act on."""

    def __init__(self, message: str, status: str = Status.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class McpAuthFailed(Exception):
    """An MCP server answered 401/403: the user must sign in or bring another token."""

    def __init__(self, status: int, step_up_scope: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.step_up_scope = step_up_scope  # a 403 insufficient_scope: the scope asked for ("" if unnamed)


def cause_of(exc: BaseException, kind: type[E]) -> E | None:
    """An exception of `kind` anywhere in `exc`'s causes, contexts or groups (SDKs wrap them)."""
    seen = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen or current is None:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        stack += [current.__cause__, current.__context__]
        stack += list(getattr(current, "exceptions", []) or [])
    return None


def remote_error(exc: BaseException) -> str:
    """What went wrong talking to a server, without its words: an error body must not reach a result."""
    inner = exc
    while getattr(inner, "exceptions", None):
        inner = inner.exceptions[0]
    status = getattr(getattr(inner, "response", None), "status_code", None)
    return f"{type(inner).__name__}, HTTP {status}" if status else type(inner).__name__


def error_code(body: Any) -> str | None:
    """A provider's error code (rate_limit_error, model_not_found), the one part of a body worth showing."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and value != "error" and _ERROR_CODE.match(value):
            return value
    return None


def describe(exc: BaseException) -> str:
    inner = exc
    while getattr(inner, "exceptions", None):
        inner = inner.exceptions[0]
    return f"{type(inner).__name__}: {inner}"[:300]


def classify(exc: Exception, task: Task, secrets: list[str]) -> tuple[str, str]:
    """(final status, result) for an exception that ended a run."""
    from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError, UsageLimitExceeded

    if isinstance(exc, UsageLimitExceeded):
        return (
            Status.FAILED,
            f"Tool call limit reached ({task.tool_call_limit} calls) before the agent finished",
        )
    refused = outbound.refusal_in(exc)
    if refused:
        return Status.FAILED, f"The model endpoint was refused: {refused}"
    if isinstance(exc, ModelHTTPError):
        kind = "rate limited the request" if exc.status_code == 429 else f"answered HTTP {exc.status_code}"
        when = "mid-stream" if getattr(exc, "in_stream", False) else f"after {llm.MODEL_RETRIES} retries"
        # The body stays out of the result (an error page is an oracle); the operator's log has it.
        log.warning("task %s: the model %s: %s", task.id, kind, mask(str(exc.body)[:500], secrets))
        code = error_code(exc.body)
        return Status.FAILED, f"The model {kind} {when}" + (f" ({code})" if code else "")
    if isinstance(exc, ModelAPIError):
        return Status.FAILED, f"The model could not be reached ({type(exc.__cause__ or exc).__name__})"
    cause = cause_of(exc, McpAuthFailed)
    if cause:
        return Status.FAILED, f"An MCP server rejected the credentials (HTTP {cause.status})"
    return Status.ERROR, f"The run failed unexpectedly: {describe(exc)}"
