"""The wire `Response` object, built as plain dicts (serialized once with orjson).

Field set and defaults follow OpenAI's `Response` schema plus the Open Responses rule that 31
fields are always present (non-null where it requires): a strict client never finds a field
missing. Keys are emitted in the order OpenAI emits them.
"""

from __future__ import annotations

from typing import Any


def usage_object(
    input_tokens: int, output_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def error_object(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def output_text_of(output: list[dict[str, Any]]) -> str:
    """The SDKs' `output_text` convenience: every output_text part of assistant messages, joined."""
    return "".join(
        part["text"]
        for item in output
        if item.get("type") == "message"
        for part in item.get("content", ())
        if part.get("type") == "output_text"
    )


def render_response(body: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
    """The full Response: the stored body with `output` put back after `model`."""
    rendered: dict[str, Any] = {}
    for key, value in body.items():
        rendered[key] = value
        if key == "model":
            rendered["output"] = output
    rendered["output_text"] = output_text_of(output)
    return rendered


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
