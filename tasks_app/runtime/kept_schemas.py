"""pydantic-ai's models with each tool's JSON schema transformed for the provider once, not per request.

pydantic-ai transforms every function tool's JSON schema for the provider on every model request
(`Model.customize_request_parameters`, which its documentation names as the method to override for
tool schemas): a walk and a deep copy of each schema. An MCP server offers the same schemas to every
run and every step, so the work is the same each time. Profiled, it was ~2 % of the server's CPU per
agent run for the benchmark's one uncalled tool, and it grows with each tool a server offers (a
schema of a few fields costs ~0.1 ms; `bench/` measures what it saves).

Kept once per process, keyed by the provider's transformer, the tool's `strict` and the schema's
JSON text: a schema seen for the first time is transformed by pydantic-ai's own code, its errors as
they were. Only the transformed schema is kept; each request still gets its own tool definitions.
Left to the library every time: tools with `strict=True` (whose transform may warn, and which a
provider's schema-limit check transforms with its warnings off), schemas over `SCHEMA_MAX_CHARS` of
JSON, and output tools. The memo holds at most `SCHEMAS_KEPT` schemas, the least recently used
dropped first.

Kept apart from llm.py because it subclasses pydantic-ai's models (imported only when a run starts).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.tools import ToolDefinition

from console import memo

SCHEMAS_KEPT = 512  # transformed schemas kept in the process; the least recently used goes first
SCHEMA_MAX_CHARS = 32_768  # a larger schema's JSON is transformed every time (bounds the memo's memory)

# (transformer, strict as given, JSON text) -> the transformed schema and strictness
_kept: dict[tuple[type, bool | None, str], tuple[dict[str, Any], bool | None]] = {}


class KeptToolSchemas:
    """Mixin for a pydantic-ai `Model`: function tools' schemas transformed once per distinct schema.

    The kept schema objects are shared by the requests that use them: the models only serialize them
    into the request body (pydantic-ai's transformer itself copies a schema before changing it).
    """

    def customize_request_parameters(
        self, model_request_parameters: ModelRequestParameters
    ) -> ModelRequestParameters:
        params = model_request_parameters
        tools = params.function_tools
        transformer = self.profile.get("json_schema_transformer")  # type: ignore[attr-defined]
        if not tools or not transformer:
            return super().customize_request_parameters(params)  # type: ignore[misc]
        transformed = [self._transformed(transformer, params, tool) for tool in tools]
        if params.output_tools or params.output_object is not None:  # theirs as the library does them
            params = super().customize_request_parameters(replace(params, function_tools=[]))  # type: ignore[misc]
        return replace(params, function_tools=transformed)

    def _transformed(
        self, transformer: type, params: ModelRequestParameters, tool: ToolDefinition
    ) -> ToolDefinition:
        if tool.strict is True:
            return self._transform(params, tool)
        try:  # in the schema's own key order: the transformed schema keeps it
            text = json.dumps(tool.parameters_json_schema, separators=(",", ":"))
        except (TypeError, ValueError):  # not plain JSON (no MCP schema is): transformed every time
            return self._transform(params, tool)
        if len(text) > SCHEMA_MAX_CHARS:
            return self._transform(params, tool)
        key = (transformer, tool.strict, text)
        kept = _kept.pop(key, None)  # taken out and put back last: the least recently used are first
        if kept is None:
            done = self._transform(params, tool)
            kept = (done.parameters_json_schema, done.strict)
        memo.remember(_kept, key, kept, SCHEMAS_KEPT)
        schema, strict = kept
        return replace(tool, parameters_json_schema=schema, strict=strict)

    def _transform(self, params: ModelRequestParameters, tool: ToolDefinition) -> ToolDefinition:
        """`tool` as the library transforms it for this model (its own code, its own errors)."""
        alone = replace(params, function_tools=[tool], output_tools=[], output_object=None)
        return super().customize_request_parameters(alone).function_tools[0]  # type: ignore[misc]


class KeptSchemasOpenAIChatModel(KeptToolSchemas, OpenAIChatModel):
    """pydantic-ai's OpenAI chat model (OpenAI and compatible endpoints), schemas transformed once."""


class KeptSchemasAnthropicModel(KeptToolSchemas, AnthropicModel):
    """pydantic-ai's Anthropic model, schemas transformed once."""
