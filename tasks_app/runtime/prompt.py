"""What the model is told: the instructions, this turn's user prompt with its files, and the
earlier turns rebuilt from the activity log."""

from __future__ import annotations

import json
from typing import Any

from console.models import Agent
from tasks_app.models import ActivityKind, Task
from tasks_app.runtime import files, llm
from tasks_app.runtime.failures import TaskFailure


def instructions(task: Task, agent: Agent) -> str:
    parts = [task.instructions_override or agent.instructions or "You are a helpful assistant."]
    if task.additional_context:
        parts.append(f"Additional context:\n{task.additional_context}")
    if task.expected_output:
        parts.append(f"Expected output:\n{task.expected_output}")
    if task.output_format == "json":
        schema = f" matching this JSON schema: {json.dumps(task.output_schema)}" if task.output_schema else ""
        parts.append(f"Answer with JSON only{schema}.")
    elif task.output_format == "markdown":
        parts.append("Format the answer as Markdown.")
    return "\n\n".join(parts)


async def user_prompt(task: Task, agent: Agent) -> list[Any]:
    """The turn's text with its files composed in, then images and PDFs as binary parts.

    A file that cannot be fetched fails the task (TaskFailure) before the model is called.
    """
    from pydantic_ai import BinaryContent

    prepared = await files.prepare(
        task.input_text,
        list(task.input_files or []),
        list(task.input_attachments or []),
        native_pdf=llm.supports_native_pdf(task, agent),
        uploads=dict(task.uploads or {}),
        inject=not task.disable_attachment_injection,
    )
    failed = [n for n in prepared.notes if n.startswith("could not read")]
    if failed:
        raise TaskFailure("A file of this task could not be fetched: " + "; ".join(failed))
    prompt: list[Any] = [prepared.text]
    prompt += [BinaryContent(data, media_type=media) for _, data, media in prepared.images]
    prompt += [BinaryContent(data, media_type="application/pdf") for _, data in prepared.documents]
    return prompt


def history_messages(entries: list[dict[str, Any]]) -> list[Any]:
    """Earlier turns rebuilt from the activity log as pydantic-ai messages."""
    from pydantic_ai.messages import (
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )

    messages: list[Any] = []
    for entry in entries:
        data = entry["data"]
        if entry["kind"] == ActivityKind.MESSAGE:
            text = (data.get("content") or {}).get("text") or ""
            if data.get("role") == "user":
                messages.append(ModelRequest(parts=[UserPromptPart(content=text)]))
            else:
                messages.append(ModelResponse(parts=[TextPart(content=text)]))
        elif entry["kind"] == ActivityKind.TOOL_CALL and data.get("tool_call_id"):
            call_id = data["tool_call_id"]
            args = data.get("payload") if isinstance(data.get("payload"), dict) else {}
            messages.append(
                ModelResponse(parts=[ToolCallPart(data["tool_name"], args, tool_call_id=call_id)])
            )
            result = data.get("result")
            content = result if isinstance(result, str) else json.dumps(result)
            messages.append(
                ModelRequest(parts=[ToolReturnPart(data["tool_name"], content, tool_call_id=call_id)])
            )
    return messages
