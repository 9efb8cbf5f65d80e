"""What pydantic-ai's stream events become in our logs, checked on the pure mapping alone:
library event objects in, our event tuples and activity entries out, nothing written anywhere."""

from __future__ import annotations

import json

from pydantic_ai import Agent
from pydantic_ai.messages import (
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.test import TestModel

from tasks_app.models import ActivityKind
from tasks_app.runtime import mapping
from tasks_app.runtime.mapping import ABORTED, Batch, ToolCalls, map_event


def types(outputs: list[mapping.Output]) -> list[str]:
    return [o[0] for o in outputs]


def test_it_turns_text_parts_and_deltas_into_chunks():
    calls = ToolCalls()
    assert map_event(PartStartEvent(index=0, part=TextPart("Hel")), calls) == [("chunk", "Hel", None)]
    assert map_event(PartDeltaEvent(index=0, delta=TextPartDelta("lo")), calls) == [("chunk", "lo", None)]


def test_it_drops_empty_text():
    calls = ToolCalls()
    assert map_event(PartStartEvent(index=0, part=TextPart("")), calls) == []
    assert map_event(PartDeltaEvent(index=0, delta=TextPartDelta("")), calls) == []


def test_it_writes_a_thought_once_when_its_part_ends():
    calls = ToolCalls()
    # Thinking deltas stream nothing: the whole thought is one event and one reasoning entry.
    assert map_event(PartStartEvent(index=0, part=ThinkingPart("Let ")), calls) == []
    assert map_event(PartDeltaEvent(index=0, delta=ThinkingPartDelta(content_delta="me")), calls) == []
    [(type_, data, entry)] = map_event(PartEndEvent(index=0, part=ThinkingPart("Let me think.")), calls)
    assert type_ == "think"
    assert data == {"type": "think", "title": "Thinking", "confidence": 1.0, "thought": "Let me think."}
    assert entry == (ActivityKind.REASONING, data)


def test_it_skips_an_empty_thought_and_a_text_part_end():
    calls = ToolCalls()
    assert map_event(PartEndEvent(index=0, part=ThinkingPart("")), calls) == []
    assert map_event(PartEndEvent(index=0, part=TextPart("done")), calls) == []


def test_it_pairs_a_tool_result_with_its_request_and_graph_item():
    calls = ToolCalls(items={"whoami": "gi-github"})
    part = ToolCallPart("whoami", {"verbose": True}, tool_call_id="call-1")
    [(type_, request, entry)] = map_event(FunctionToolCallEvent(part), calls)
    assert type_ == "tool_call_request" and entry is None  # the activity log keeps one entry per call
    assert request == {
        "request_id": "call-1",
        "operation_id": "whoami",
        "tool_call_id": "call-1",
        "graph_node_id": "gi-github",
        "graph_item_id": "gi-github",
        "tool_name": "whoami",
        "payload": {"verbose": True},
    }
    assert calls.used == ["whoami"] and "call-1" in calls.inflight

    result = ToolReturnPart("whoami", {"login": "alice"}, tool_call_id="call-1")
    [(type_, data, entry)] = map_event(FunctionToolResultEvent(result), calls)
    assert type_ == "tool_call_result"
    assert data == {**request, "result": {"login": "alice"}, "is_error": False, "status": "completed"}
    assert entry == (ActivityKind.TOOL_CALL, data)
    assert calls.inflight == {}


def test_it_reads_json_string_arguments_and_keeps_unparseable_ones():
    calls = ToolCalls()
    good = ToolCallPart("t", '{"a": 1}', tool_call_id="c1")
    bad = ToolCallPart("t", "{not json", tool_call_id="c2")
    assert map_event(FunctionToolCallEvent(good), calls)[0][1]["payload"] == {"a": 1}
    payload = map_event(FunctionToolCallEvent(bad), calls)[0][1]["payload"]
    assert "{not json" in json.dumps(payload)  # the model's words are kept, not dropped


def test_it_marks_a_failed_tool_result_as_an_error():
    calls = ToolCalls()
    map_event(FunctionToolCallEvent(ToolCallPart("t", {}, tool_call_id="c1")), calls)
    failed = ToolReturnPart("t", "the server is down", tool_call_id="c1", outcome="failed")
    [(_, data, _)] = map_event(FunctionToolResultEvent(failed), calls)
    assert data["is_error"] is True and data["status"] == "failed"
    assert data["result"] == "the server is down"


def test_a_result_without_its_request_still_names_the_tool():
    [(_, data, _)] = map_event(
        FunctionToolResultEvent(ToolReturnPart("t", 3, tool_call_id="c9")), ToolCalls()
    )
    assert data == {
        "tool_call_id": "c9",
        "tool_name": "t",
        "payload": None,
        "result": 3,
        "is_error": False,
        "status": "completed",
    }


def test_a_result_that_is_not_json_is_written_as_text():
    calls = ToolCalls()
    [(_, data, _)] = map_event(FunctionToolResultEvent(ToolReturnPart("t", {1, 2}, tool_call_id="c")), calls)
    assert isinstance(data["result"], str)
    json.dumps(data)


def test_calls_still_running_when_stopped_end_as_aborted():
    calls = ToolCalls(items={"slow": "gi-slow"})
    map_event(FunctionToolCallEvent(ToolCallPart("slow", {}, tool_call_id="c1")), calls)
    [(type_, data, entry)] = mapping.aborted(calls)
    assert type_ == "tool_call_result"
    assert data["result"] == ABORTED and data["status"] == "aborted" and data["is_error"] is True
    assert data["graph_item_id"] == "gi-slow"
    assert entry == (ActivityKind.TOOL_CALL, data)


def test_a_batch_joins_text_deltas_into_one_chunk_before_the_next_event():
    batch = Batch()
    for piece in ["The ", "answer ", "", "is"]:
        batch.add(("chunk", piece, None))
    assert batch.only_text
    think = {"thought": "x"}
    batch.add(("think", think, (ActivityKind.REASONING, think)))
    batch.add(("chunk", " 42", None))
    assert not batch.only_text
    events, activity = batch.take()
    assert events == [("chunk", "The answer is"), ("think", think), ("chunk", " 42")]
    assert activity == [(ActivityKind.REASONING, think)]
    assert batch.take() == ([], [])


def test_an_activity_entry_comes_after_the_text_before_it():
    batch = Batch()
    batch.add(("chunk", "partial", None))
    batch.add_entry(*mapping.error_message("boom"))
    events, activity = batch.take()
    assert events == [("chunk", "partial")]
    assert activity == [(ActivityKind.MESSAGE, {"role": "agent", "content": {"text": "Error: boom"}})]


def test_it_names_sub_agent_tools_safely():
    assert mapping.slug("Research Bot (EU)") == "research_bot_eu"
    assert mapping.slug("***") == "agent"
    assert len(mapping.slug("x" * 100)) == 48


async def test_a_real_run_maps_to_paired_tool_calls_chunks_and_usage():
    """pydantic-ai's own offline test model drives a run with a tool: its real event stream."""
    agent = Agent(TestModel(custom_output_text="All done."))

    @agent.tool_plain
    def lookup(city: str) -> str:
        return f"sunny in {city}"

    calls = ToolCalls(items={"lookup": "gi-weather"})
    outputs: list[mapping.Output] = []
    finished = None
    async with agent.run_stream_events("weather?") as stream:
        async for event in stream:
            finished = mapping.run_result(event) or finished
            outputs += map_event(event, calls)
    assert types(outputs)[:2] == ["tool_call_request", "tool_call_result"]
    request, result = outputs[0][1], outputs[1][1]
    assert result["tool_call_id"] == request["tool_call_id"] and result["graph_item_id"] == "gi-weather"
    assert result["result"].startswith("sunny in")
    assert "".join(o[1] for o in outputs if o[0] == "chunk") == "All done."
    assert calls.used == ["lookup"] and calls.inflight == {}
    text, usage = finished
    assert text == "All done."
    assert set(usage) == {"prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens"}
    assert usage["prompt_tokens"] > 0


async def test_structured_output_is_written_as_json():
    agent = Agent(TestModel(custom_output_args={"answer": 42}), output_type=dict)
    async with agent.run_stream_events("answer?") as stream:
        results = [r async for event in stream if (r := mapping.run_result(event))]
    assert [json.loads(text) for text, _ in results] == [{"answer": 42}]
