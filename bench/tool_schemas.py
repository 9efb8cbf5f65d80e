"""CPU per model request to transform the tools' JSON schemas: pydantic-ai's model against the runtime's.

pydantic-ai transforms every function tool's schema on every model request; the runtime's models
(tasks_app/runtime/kept_schemas.py) keep each transformed schema. This measures one request's
`customize_request_parameters` for an MCP server of 1 and of 40 tools (the schema the MCP benchmark
server's tool has, with nested definitions), in this process, no network.

    .venv/bin/python bench/tool_schemas.py
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai import AsyncOpenAI
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
from pydantic_ai.tools import ToolDefinition

from tasks_app.runtime.kept_schemas import KeptSchemasOpenAIChatModel

SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "what to look for"},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "filter": {"$ref": "#/$defs/Filter"},
    },
    "required": ["query"],
    "$defs": {"Filter": {"type": "object", "properties": {"since": {"type": "string", "format": "date"}}}},
}


def main() -> None:
    client = AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    provider = OpenAICompatibleProvider("openai_compatible", openai_client=client)
    stock = OpenAIChatModel("m", provider=provider)
    kept = KeptSchemasOpenAIChatModel("m", provider=provider)
    out = {}
    for n in (1, 40):
        tools = [
            ToolDefinition(
                name=f"tool_{i}", parameters_json_schema={**SCHEMA, "title": f"T{i}"}, description="d"
            )
            for i in range(n)
        ]
        params = ModelRequestParameters(function_tools=tools)
        assert kept.customize_request_parameters(params) == stock.customize_request_parameters(params)
        number = 20_000 // n
        for name, model in (("pydantic-ai", stock), ("runtime", kept)):
            seconds = min(
                timeit.repeat(
                    lambda m=model, p=params: m.customize_request_parameters(p), number=number, repeat=5
                )
            )
            out[f"{n} tools, {name}"] = round(1e6 * seconds / number, 1)
    print(json.dumps({"us_per_request": out}, indent=2))


if __name__ == "__main__":
    main()
