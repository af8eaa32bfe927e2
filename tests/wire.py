"""Strict wire checks: every body must validate as the official SDK's typed model (a missing
required field or a wrong type fails), and against the Open Responses and OpenAI JSON schemas
(`tests/schemas.py`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.schemas import check_event_schemas, check_response_schemas

# Open Responses: present and non-null / present and possibly null.
REQUIRED_NON_NULL = (
    "id object created_at status model output tools tool_choice truncation parallel_tool_calls "
    "text top_p presence_penalty frequency_penalty top_logprobs temperature store background "
    "service_tier metadata"
).split()
REQUIRED_NULLABLE = (
    "completed_at incomplete_details previous_response_id instructions error reasoning usage "
    "max_output_tokens max_tool_calls safety_identifier prompt_cache_key"
).split()

_items = TypeAdapter(list[ResponseItem])


def strict_response(data: dict[str, Any]) -> Response:
    for key in REQUIRED_NON_NULL:
        assert data.get(key) is not None, f"Response.{key} is missing or null"
    for key in REQUIRED_NULLABLE:
        assert key in data, f"Response.{key} is missing"
    if data["usage"] is not None:
        assert set(data["usage"]["input_tokens_details"]) >= {"cached_tokens"}
    for tool in data["tools"]:
        if tool["type"] == "function":
            assert set(tool) >= {"type", "name", "description", "parameters", "strict"}
    for item in data["output"]:
        assert item.get("id"), item
        if item["type"] in ("message", "function_call"):
            assert item.get("status"), item
    for part in _output_text_parts(data):  # Open Responses requires the list, empty or not
        assert isinstance(part.get("logprobs"), list), part
    check_response_schemas(data)
    return Response.model_validate(data)


def strict_items(data: list[dict[str, Any]]) -> list[Any]:
    return _items.validate_python(data)


def raw_create(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    """POST /v1/responses through the SDK, returning the exact JSON the gateway sent."""
    raw = client.responses.with_raw_response.create(**kwargs)
    return json.loads(raw.text)


_events: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@dataclass
class SSEStream:
    """A stream read raw off the wire, every frame checked for the framing rules."""

    events: list[dict[str, Any]]
    comments: list[str]

    @property
    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == type_]

    @property
    def terminal(self) -> dict[str, Any]:
        return self.events[-1]


def parse_sse(raw: str) -> SSEStream:
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    assert raw.endswith("\n\n"), "the stream must end on a frame boundary"
    for block in raw.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            comments.extend(lines)
            continue
        assert len(lines) == 2, f"a frame is one event line and one data line: {block!r}"
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        data = json.loads(lines[1][len("data: ") :])
        assert data["type"] == lines[0][len("event: ") :]
        events.append(data)
    return SSEStream(events, comments)


def _output_text_parts(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        part
        for item in data.get("output") or ()
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    ]


_TEXT_EVENTS = (
    "response.output_text.delta",
    "response.output_text.done",
    "response.output_text.annotation.added",
    "response.refusal.delta",
    "response.refusal.done",
)
_ARGUMENT_EVENTS = (
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
)


def check_event_order(events: list[dict[str, Any]]) -> None:
    """The order rules of the Open Responses compliance suite's stream checker, and OpenAI's:
    an item is added once (at the next `output_index`) and done once, after it was added; a
    content part is added once per (item, index) on an added item and done once; text,
    refusal and argument events name an open item (and an open part); a stream that completes
    leaves nothing open."""
    added: set[str] = set()
    done: set[str] = set()
    parts: set[tuple[str, int]] = set()
    closed: set[tuple[str, int]] = set()
    for event in events:
        kind = event["type"]
        item_id = event.get("item_id")
        part = (item_id, event.get("content_index"))
        if kind == "response.output_item.added":
            item = event["item"]["id"]
            assert item not in added, f"{item} added twice"
            assert event["output_index"] == len(added), event
            added.add(item)
        elif kind == "response.output_item.done":
            item = event["item"]["id"]
            assert item in added and item not in done, f"{item} done before added, or twice"
            done.add(item)
        elif kind == "response.content_part.added":
            assert item_id in added and item_id not in done, event
            assert part not in parts, f"part {part} added twice"
            parts.add(part)  # type: ignore[arg-type]
        elif kind == "response.content_part.done":
            assert part in parts and part not in closed, f"part {part} done, not open"
            closed.add(part)  # type: ignore[arg-type]
        elif kind in _TEXT_EVENTS:
            assert item_id in added and item_id not in done, event
            assert part in parts and part not in closed, f"{kind} on a part not open: {part}"
        elif kind in _ARGUMENT_EVENTS:
            assert item_id in added and item_id not in done, event
    if events and events[-1]["type"] in ("response.completed", "response.incomplete"):
        assert added == done, f"left open: {added - done}"
        assert parts == closed, f"parts left open: {parts - closed}"


def strict_stream(stream: SSEStream) -> list[Any]:
    """Every event parses as the SDK's typed union (no unknown type, no missing field); sequence
    numbers start at 0 and increase by one; exactly one terminal event, last; items and parts
    open and close in order (`check_event_order`); every `output_text` part carries its
    `logprobs` list (Open Responses requires it)."""
    parsed = [_events.validate_python(event) for event in stream.events]
    check_event_schemas(stream.events)
    check_event_order(stream.events)
    for event in stream.events:
        if event.get("part", {}).get("type") == "output_text":
            assert isinstance(event["part"].get("logprobs"), list), event
    assert [event["sequence_number"] for event in stream.events] == list(range(len(stream.events)))
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert [t for t in stream.types if t in terminal] == [stream.types[-1]]
    opening = ["response.created", "response.in_progress"]
    if stream.types[1:2] == ["response.queued"]:  # background
        opening = ["response.created", "response.queued", "response.in_progress"]
    assert stream.types[: len(opening)] == opening, stream.types[:3]
    strict_response(stream.terminal["response"])
    return parsed


def create_raw(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/responses without the SDK, checked strictly: the Response as sent."""
    r = httpx.post(f"{base_url}/v1/responses", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"  # Open Responses: MUST
    data: dict[str, Any] = r.json()
    strict_response(data)
    return data


def get_raw(base_url: str, path: str) -> dict[str, Any]:
    """GET /v1{path}, expecting a 200: the JSON as sent."""
    r = httpx.get(f"{base_url}/v1{path}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def stream_raw(base_url: str, body: dict[str, Any]) -> SSEStream:
    with httpx.stream(
        "POST", f"{base_url}/v1/responses", json={**body, "stream": True}, timeout=30
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return parse_sse(r.read().decode())


def restream_raw(base_url: str, response_id: str, starting_after: int | None = None) -> SSEStream:
    params: dict[str, Any] = {"stream": "true"}
    if starting_after is not None:
        params["starting_after"] = starting_after
    with httpx.stream(
        "GET", f"{base_url}/v1/responses/{response_id}", params=params, timeout=30
    ) as r:
        assert r.status_code == 200, r.read()
        return parse_sse(r.read().decode())
