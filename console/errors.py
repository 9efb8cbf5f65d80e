"""Errors of the task API, each with the HTTP status a caller should see."""

from __future__ import annotations

from typing import Any


class TaskApiError(Exception):
    status_code = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"detail": self.message, **self.extra}


class BadRequest(TaskApiError):
    status_code = 400


class Unauthorized(TaskApiError):
    status_code = 401


class Forbidden(TaskApiError):
    status_code = 403


class NotFound(TaskApiError):
    status_code = 404


class Conflict(TaskApiError):
    status_code = 409


class TooLarge(TaskApiError):
    status_code = 413


class TooManyRequests(TaskApiError):
    status_code = 429


class Invalid(TaskApiError):
    """422: the body has the right syntax but a field is wrong; `field` names it."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


TRANSIENT_DATABASE_ERRORS = (
    "locked",
    "timeout",
    "timed out",
    "could not connect",
    "connection",
    "server closed",
)


def transient_database_error(exc: BaseException) -> bool:
    """A database error a retry can get past (a lock held too long, a lost connection), not a broken
    schema or disk: the first is a 503 to retry, the second a 500 for the operator."""
    text = str(exc).lower()
    return any(marker in text for marker in TRANSIENT_DATABASE_ERRORS)
