"""The one exception the client raises for every failure."""

from __future__ import annotations


class ModuleException(Exception):
    """A failed call: `status_code` is the HTTP status (or the closest one for a client-side failure),
    `description` the server's message or what went wrong."""

    def __init__(self, status_code: int, description: str) -> None:
        super().__init__(status_code, description)
        self.status_code = status_code
        self.description = description

    def __str__(self) -> str:
        return f"[{self.status_code}] {self.description}"
