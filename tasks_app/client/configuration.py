"""Where the server is and who is calling, read from the environment like the official SDK."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_BASE_URL = "http://127.0.0.1:8000/api"  # what `make run` serves


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


class Configuration(BaseModel):
    """Connection settings. Unset fields come from XPANDER_API_KEY, XPANDER_BASE_URL,
    XPANDER_ORGANIZATION_ID and XPANDER_AGENT_ID when the object is built."""

    model_config = ConfigDict(validate_assignment=True)

    api_key: str | None = Field(default_factory=lambda: _env("XPANDER_API_KEY"))
    base_url: str = Field(
        default_factory=lambda: _env("XPANDER_BASE_URL") or DEFAULT_BASE_URL, validate_default=True
    )
    organization_id: str | None = Field(default_factory=lambda: _env("XPANDER_ORGANIZATION_ID"))
    agent_id: str | None = Field(default_factory=lambda: _env("XPANDER_AGENT_ID"))
    timeout: float = Field(default=60.0, gt=0, description="seconds for each REST call")
    stream_read_timeout: float = Field(
        default=60.0, gt=0, description="seconds of silence (no event, no keep-alive) before reconnecting"
    )
    stream_reconnect_attempts: int = Field(
        default=8, ge=0, description="consecutive failed reconnects before events() gives up"
    )

    @field_validator("base_url", mode="before")
    @classmethod
    def _normalise_base_url(cls, value: str | None) -> str:
        value = (value or "").strip() or _env("XPANDER_BASE_URL") or DEFAULT_BASE_URL
        if "://" not in value:
            value = "https://" + value  # as the official SDK does: give the scheme for plain http
        return value.rstrip("/")

    def get_full_url(self) -> str:
        """The REST root; `/{organization_id}` is appended for agent-controller style URLs, as upstream."""
        parts = urlsplit(self.base_url)
        first_segment = parts.path.strip("/").split("/", 1)[0]
        if self.organization_id and (
            "agent-controller" in (parts.hostname or "")
            or parts.port == 9016
            or first_segment == "agent-controller"
        ):
            return f"{self.base_url}/{self.organization_id}"
        return self.base_url

    def url(self, path: str) -> str:
        return f"{self.get_full_url()}/{path.lstrip('/')}"

    def events_url(self, task_id: str) -> str:
        """The SSE route; like the official SDK it carries the organization segment when one is known."""
        root = self.get_full_url()
        if self.organization_id and not root.endswith(f"/{self.organization_id}"):
            root = f"{root}/{self.organization_id}"
        return f"{root}/agent-execution/{task_id}/events"
