"""The runtime's models transform each tool schema once, and give exactly what pydantic-ai's own give.

Compared with pydantic-ai's stock models (the same provider, profile and client) on the schemas an
MCP server sends: nested definitions, optional fields, `strict` set or not, with output tools beside.
"""

from __future__ import annotations

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from pydantic_ai.exceptions import UserError
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
from pydantic_ai.tools import ToolDefinition

from bench.tool_schemas import SCHEMA
from tasks_app.runtime import kept_schemas
from tasks_app.runtime.kept_schemas import KeptSchemasAnthropicModel, KeptSchemasOpenAIChatModel

FETCH = {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}


def models(kind: str) -> tuple[object, object]:
    """(stock, kept): pydantic-ai's model and ours, on one client, for `kind`."""
    if kind == "anthropic":
        client = AsyncAnthropic(api_key="unused", base_url="http://127.0.0.2:9")
        provider = AnthropicProvider(anthropic_client=client)
        return AnthropicModel("claude", provider=provider), KeptSchemasAnthropicModel(
            "claude", provider=provider
        )
    oai = AsyncOpenAI(api_key="unused", base_url="http://127.0.0.2:9/v1")
    provider = OpenAICompatibleProvider("openai_compatible", openai_client=oai)
    return OpenAIChatModel("m", provider=provider), KeptSchemasOpenAIChatModel("m", provider=provider)


def tools() -> list[ToolDefinition]:
    return [
        ToolDefinition(name="search", parameters_json_schema=SCHEMA, description="Search"),
        ToolDefinition(name="fetch", parameters_json_schema=FETCH, description="Fetch", strict=True),
        ToolDefinition(name="fetch_loose", parameters_json_schema=FETCH, strict=False),
    ]


@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic"])
def test_the_kept_schemas_are_what_pydantic_ai_gives_request_after_request(kind):
    stock, kept = models(kind)
    output = [ToolDefinition(name="final_result", parameters_json_schema=FETCH, kind="output")]
    for params in (
        ModelRequestParameters(function_tools=tools()),
        ModelRequestParameters(function_tools=tools(), output_tools=output, allow_text_output=False),
    ):
        expected = stock.customize_request_parameters(params)
        first = kept.customize_request_parameters(params)
        again = kept.customize_request_parameters(params)
        assert first == expected and again == expected
        # the second request reuses the transformed schemas, in tool definitions of its own; a tool
        # with strict=True is left to the library each time (its transform may warn)
        for a, b in zip(first.function_tools, again.function_tools, strict=True):
            assert (a.parameters_json_schema is b.parameters_json_schema) is (a.strict is not True)
            assert a is not b
    assert params.function_tools[0].parameters_json_schema == SCHEMA  # the input is left as it was


def test_a_changed_schema_is_transformed_anew_and_strict_is_part_of_the_key():
    stock, kept = models("openai_compatible")
    kept.customize_request_parameters(ModelRequestParameters(function_tools=tools()))
    changed = {**FETCH, "properties": {"url": {"type": "string"}, "depth": {"type": "integer"}}}
    params = ModelRequestParameters(
        function_tools=[
            ToolDefinition(name="fetch", parameters_json_schema=changed, strict=True),
            ToolDefinition(name="fetch_again", parameters_json_schema=FETCH),  # strict unset: inferred
        ]
    )
    assert kept.customize_request_parameters(params) == stock.customize_request_parameters(params)


def test_a_schema_that_is_not_plain_json_is_transformed_each_time():
    import datetime

    stock, kept = models("openai_compatible")
    odd = {"type": "object", "properties": {"at": {"type": "string", "default": datetime.date(2026, 1, 1)}}}
    params = ModelRequestParameters(function_tools=[ToolDefinition(name="odd", parameters_json_schema=odd)])
    first, again = (kept.customize_request_parameters(params) for _ in "ab")
    assert first == again == stock.customize_request_parameters(params)
    assert (
        first.function_tools[0].parameters_json_schema is not again.function_tools[0].parameters_json_schema
    )


def test_an_invalid_schema_fails_as_the_library_fails_it_every_time():
    stock, kept = models("openai_compatible")
    bad = ModelRequestParameters(
        function_tools=[ToolDefinition(name="bad", parameters_json_schema={"type": 5})]
    )
    with pytest.raises(UserError) as from_stock:
        stock.customize_request_parameters(bad)
    for _ in "ab":  # nothing kept from a failure
        with pytest.raises(UserError) as from_kept:
            kept.customize_request_parameters(bad)
        assert str(from_kept.value) == str(from_stock.value)
        assert "bad" in str(from_kept.value)


def test_the_runtime_builds_the_kept_models():
    import asyncio

    from console.models import Agent
    from tasks_app.models import Task
    from tasks_app.runtime import llm

    agent = Agent(
        name="A", model_provider="openai_compatible", model_name="m", model_base_url="http://127.0.0.2:9/v1"
    )

    async def build() -> object:
        return llm.build_model(Task(agent=agent), agent)

    assert isinstance(asyncio.run(build()), KeptSchemasOpenAIChatModel)


def test_the_memo_keeps_the_most_recently_used_schemas_and_leaves_large_ones_out(monkeypatch):
    stock, kept = models("openai_compatible")
    monkeypatch.setattr(kept_schemas, "_kept", {})
    monkeypatch.setattr(kept_schemas, "SCHEMAS_KEPT", 3)

    def schema_of(name: str, **extra: object) -> dict:
        params = ModelRequestParameters(
            function_tools=[
                ToolDefinition(name=name, parameters_json_schema={**FETCH, "title": name, **extra})
            ]
        )
        got = kept.customize_request_parameters(params)
        assert got == stock.customize_request_parameters(params)
        return got.function_tools[0].parameters_json_schema

    first = {name: schema_of(name) for name in "abc"}
    assert schema_of("a") is first["a"]  # used again: now the most recent
    schema_of("d")  # a fourth: the least recently used (b) goes
    assert schema_of("a") is first["a"] and schema_of("c") is first["c"]
    assert schema_of("b") is not first["b"]
    assert len(kept_schemas._kept) == 3

    large = {"description": "x" * kept_schemas.SCHEMA_MAX_CHARS}
    assert schema_of("large", **large) is not schema_of("large", **large)
    assert len(kept_schemas._kept) == 3
