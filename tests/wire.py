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


def strict_stream(stream: SSEStream) -> list[Any]:
    """Every event parses as the SDK's typed union (no unknown type, no missing field); sequence
    numbers start at 0 and increase by one; exactly one terminal event, last."""
    parsed = [_events.validate_python(event) for event in stream.events]
    check_event_schemas(stream.events)
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
