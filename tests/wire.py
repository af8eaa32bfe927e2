"""Strict wire checks: every body must validate as the official SDK's typed model (a missing
required field or a wrong type fails), and carry the fields Open Responses requires."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.responses import Response, ResponseItem
from pydantic import TypeAdapter

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
    return Response.model_validate(data)


def strict_items(data: list[dict[str, Any]]) -> list[Any]:
    return _items.validate_python(data)


def raw_create(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    """POST /v1/responses through the SDK, returning the exact JSON the gateway sent."""
    raw = client.responses.with_raw_response.create(**kwargs)
    return json.loads(raw.text)
