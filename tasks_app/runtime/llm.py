"""Building the pydantic-ai model for a task from its agent's config and per-task overrides."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import httpx2
from django.conf import settings

from console import memo, outbound
from console.models import Agent
from tasks_app.models import Task

MODEL_RETRIES = int(os.environ.get("MODEL_MAX_RETRIES", "2"))
MODEL_TIMEOUT = float(os.environ.get("MODEL_TIMEOUT_SECONDS", "120"))
PROVIDERS = {"openai", "anthropic", "openai_compatible", "ollama"}
OLLAMA_DEFAULT = "http://127.0.0.1:11434/v1"


def lean_stream() -> bool:
    """Whether OpenAI-compatible streams take the lean path (tasks_app/runtime/lean_openai.py).

    On unless the setting LLM_LEAN_STREAM turns it off: the operator's way back to the openai SDK's
    own stream reader if a provider disagrees with it.
    """
    return bool(settings.LLM_LEAN_STREAM)


class ModelConfigError(Exception):
    """The task cannot run because its model is not configured; the message says what to set."""


def resolve(task: Task, agent: Agent) -> tuple[str, str, str, str | None]:
    """(provider, model name, base url, api key) for this task."""
    provider = (task.llm_model_provider or agent.model_provider or "openai").lower()
    if provider not in PROVIDERS:
        raise ModelConfigError(
            f"Unknown model provider {provider!r}; use one of {', '.join(sorted(PROVIDERS))}"
        )
    name = task.llm_model_name or agent.model_name
    if not name:
        raise ModelConfigError(f"Agent {agent.name!r} has no model_name")
    base_url = agent.model_base_url or (OLLAMA_DEFAULT if provider == "ollama" else "")
    # A task that switches provider without the agent's base URL goes to another endpoint: not with this key.
    same_endpoint = bool(agent.model_base_url) or provider == (agent.model_provider or "openai").lower()
    key = agent.get_model_api_key() if same_endpoint else None
    if not key and not agent.model_base_url:
        # The operator's key only ever goes to the provider's own endpoint, never to a URL an admin set.
        key = {
            "openai": os.environ.get("OPENAI_API_KEY"),
            "anthropic": os.environ.get("ANTHROPIC_API_KEY"),
        }.get(provider)
    if provider in {"openai", "anthropic"} and not key:
        env = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
        if not same_endpoint:
            raise ModelConfigError(
                f"No API key for model provider {provider}: the agent's key is only sent to its own "
                f"provider ({agent.model_provider}), and the server has no {env}"
            )
        raise ModelConfigError(
            f"No API key for model provider {provider}: set model_api_key on agent {agent.name!r} "
            f"(PATCH /api/v1/agents/{agent.id})"
            + (
                f"; the server's {env} is only sent to the provider's own endpoint, not to {base_url}"
                if agent.model_base_url
                else f" or {env} in the server's environment"
            )
        )
    if provider == "openai_compatible" and not base_url:
        raise ModelConfigError(
            f"Agent {agent.name!r} uses an OpenAI-compatible provider but has no model_base_url"
        )
    return provider, name, base_url, key


def environment_keys() -> list[str]:
    """The operator's provider keys, so the runtime can mask them wherever they might echo back."""
    return [os.environ.get("OPENAI_API_KEY", ""), os.environ.get("ANTHROPIC_API_KEY", "")]


_clients: dict[tuple, Any] = {}


def _client(provider: str, base_url: str, key: str | None) -> Any:
    """One SDK client (and connection pool) per endpoint and key, per event loop, on guarded connections.

    Building a client costs an SSL context and a connection pool; tasks of the same agent share
    them. A cancelled stream still closes its own connection, so stops are unaffected.
    OpenAI-compatible clients read streams the lean way unless LLM_LEAN_STREAM is off.
    """
    loop = asyncio.get_running_loop()
    lean = provider != "anthropic" and lean_stream()
    cache_key = (
        id(loop),
        provider == "anthropic",
        lean,
        base_url,
        hashlib.sha256((key or "").encode()).hexdigest(),
    )
    client = _clients.get(cache_key)
    if client is None:
        # One streaming connection per running task: a pool smaller than the worker's concurrency
        # would hold the tasks beyond it waiting for a connection (2,000 tasks, 1,000 model calls).
        limits = httpx2.Limits(
            max_connections=max(outbound.LIMITS.max_connections or 0, settings.WORKER_CONCURRENCY),
            max_keepalive_connections=outbound.LIMITS.max_keepalive_connections,
        )
        http_client = outbound.client(timeout=MODEL_TIMEOUT, follow_redirects=True, limits=limits)
        if provider == "anthropic":
            from anthropic import AsyncAnthropic

            client = AsyncAnthropic(
                api_key=key,
                base_url=base_url or None,
                max_retries=MODEL_RETRIES,
                timeout=MODEL_TIMEOUT,
                http_client=http_client,
            )
        else:
            if lean:
                from tasks_app.runtime.lean_openai import LeanAsyncOpenAI as AsyncOpenAI
            else:
                from openai import AsyncOpenAI

            client = AsyncOpenAI(
                api_key=key or "not-needed",
                base_url=base_url or None,
                max_retries=MODEL_RETRIES,
                timeout=MODEL_TIMEOUT,
                http_client=http_client,
            )
        _clients[cache_key] = client
    return client


_models: dict[tuple, Any] = {}
MODELS_KEPT = 256  # distinct (client, provider, model name) kept; beyond that the oldest is dropped


def build_model(task: Task, agent: Agent) -> Any:
    """A pydantic-ai model with bounded retries (the provider SDKs back off on 429/5xx).

    One model object per client and model name, shared by the runs that use them, as pydantic-ai
    intends (a model holds no run's state). Why: building one per run cost 3 % of the server's CPU
    per run, and its profile (looked up lazily in genai-prices' data, every provider tried for a
    name it does not know) another 2 %.
    """
    provider, name, base_url, key = resolve(task, agent)
    client = _client(provider, base_url, key)
    cache_key = (id(client), provider, name)  # a client stays in `_clients` for good: its id is its own
    model = _models.get(cache_key)
    if model is None:
        model = _new_model(provider, name, client)
        memo.remember(_models, cache_key, model, MODELS_KEPT)
    return model


def _new_model(provider: str, name: str, client: Any) -> Any:
    """pydantic-ai's model for the provider, transforming each tool schema once (kept_schemas.py)."""
    if provider == "anthropic":
        from pydantic_ai.providers.anthropic import AnthropicProvider

        from tasks_app.runtime.kept_schemas import KeptSchemasAnthropicModel

        return KeptSchemasAnthropicModel(name, provider=AnthropicProvider(anthropic_client=client))
    from tasks_app.runtime.kept_schemas import KeptSchemasOpenAIChatModel as OpenAIChatModel

    if provider == "openai":
        from pydantic_ai.providers.openai import OpenAIProvider

        return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

    return OpenAIChatModel(name, provider=OpenAICompatibleProvider(provider, openai_client=client))


def supports_native_pdf(task: Task, agent: Agent) -> bool:
    """OpenAI and Anthropic take PDFs as documents; generic compatible endpoints get extracted text."""
    provider = (task.llm_model_provider or agent.model_provider or "openai").lower()
    return provider in {"openai", "anthropic"}
