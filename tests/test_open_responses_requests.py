"""What Open Responses lets a client send to `POST /v1/responses` (each body is first checked
against its `CreateResponseBody` schema), accepted by the gateway and answered with bodies valid
against both schemas: nullable fields sent as null, optional fields OpenAI's types require left
out, and loosely shaped input items listed back complete."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Stack
from tests.schemas import check_item_list, open_responses
from tests.wire import create_raw, get_raw, stream_raw, strict_stream

# The SQLite half is enough: the wire shape does not depend on the database.
pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8Dw"
    "HwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
PDF = "data:application/pdf;base64,JVBERi0xLjEKJSVFT0YK"


def post(gw: Stack, body: dict[str, Any]) -> dict[str, Any]:
    return create_raw(gw.gateway.url, body)


def get(gw: Stack, path: str) -> dict[str, Any]:
    return get_raw(gw.gateway.url, path)


def or_request(body: dict[str, Any]) -> dict[str, Any]:
    """A create body that is valid Open Responses input (checked), as the suite may send it."""
    open_responses().check("CreateResponseBody", body)
    return body


NULLS = {
    "previous_response_id": None,
    "tools": None,
    "tool_choice": None,
    "text": None,
    "temperature": None,
    "top_p": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "parallel_tool_calls": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "reasoning": None,
    "safety_identifier": None,
    "prompt_cache_key": None,
    "instructions": None,
    "top_logprobs": None,
    "metadata": None,
    "stream_options": None,
}


def test_open_responses_request_with_every_nullable_field_null(gw: Stack) -> None:
    data = post(gw, or_request({"model": "local-llama", "input": "hi", **NULLS}))
    assert data["tools"] == [] and data["tool_choice"] == "auto"


def test_open_responses_optional_defaults(gw: Stack) -> None:
    """Fields Open Responses lets a client leave out or null, which OpenAI's types require."""
    allowed = {"type": "allowed_tools", "tools": [{"type": "function", "name": "get_weather"}]}
    body = {"model": "local-llama", "input": "hi", "tools": [WEATHER_TOOL], "tool_choice": allowed}
    data = post(gw, or_request({**body, "text": {"format": None, "verbosity": "high"}}))
    assert data["tool_choice"] == {**allowed, "mode": "auto"}
    assert data["text"] == {"format": {"type": "text"}, "verbosity": "high"}


def test_open_responses_request_fields(gw: Stack) -> None:
    body = {
        "model": "local-llama",
        "input": "hi",
        "include": ["message.output_text.logprobs", "reasoning.encrypted_content"],
        "tools": [WEATHER_TOOL],
        "tool_choice": {
            "type": "allowed_tools",
            "tools": [{"type": "function", "name": "get_weather"}],
            "mode": "auto",
        },
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "temperature": 0.2,
        "top_p": 0.5,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "parallel_tool_calls": False,
        "stream": False,
        "background": False,
        "max_output_tokens": 64,
        "max_tool_calls": 2,
        "reasoning": {"effort": "low", "summary": "concise"},
        "truncation": "disabled",
        "store": True,
        "service_tier": "auto",
        "top_logprobs": 2,
        "metadata": {"k": "v"},
    }
    post(gw, or_request(body))
    streamed = {**body, "stream": True, "stream_options": {"include_obfuscation": False}}
    strict_stream(stream_raw(gw.gateway.url, or_request(streamed)))


def test_open_responses_input_items_with_nulls(gw: Stack) -> None:
    first = post(gw, {"model": "local-llama", "input": "remember me"})
    items = [
        {"type": "message", "role": "system", "content": "Be brief.", "id": None},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "x"}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": PNG, "detail": None},
                {"type": "input_file", "filename": "a.pdf", "file_data": PDF, "file_url": None},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": None,
            "status": None,
            "content": [{"type": "output_text", "text": "Hello.", "annotations": []}],
        },
        {
            "type": "reasoning",
            "id": None,
            "summary": [{"type": "summary_text", "text": "."}],
            "content": None,
            "encrypted_content": None,
        },
        {
            "type": "function_call",
            "id": None,
            "call_id": "call_n",
            "name": "get_weather",
            "arguments": "{}",
            "status": None,
        },
        {
            "type": "function_call_output",
            "id": None,
            "call_id": "call_n",
            "output": [{"type": "input_text", "text": "sunny"}],
            "status": None,
        },
        {"type": None, "id": first["output"][0]["id"]},
        {"type": "message", "role": "user", "content": "and now?"},
    ]
    data = post(gw, or_request({"model": "local-llama", "input": items, "tools": [WEATHER_TOOL]}))
    listed = get(gw, f"/responses/{data['id']}/input_items?order=asc")
    check_item_list(listed, "ResponseItemList")
    assert len(listed["data"]) == len(items)
