"""Builders of output items and parts in their wire shape, shared by backends and core.
Ids come from `app.ids`, the one place ids are made."""

from __future__ import annotations

from typing import Any

from app.ids import new_id, new_item_id


def reasoning_item(text: str) -> dict[str, Any]:
    return {
        "id": new_item_id("reasoning"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def message_item(parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": new_item_id("message"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def function_call_item(
    call_id: str | None, name: str, arguments: str, status: str, namespace: str | None = None
) -> dict[str, Any]:
    item = {
        "id": new_item_id("function_call"),
        "type": "function_call",
        "status": status,
        "call_id": call_id or new_id("call"),
        "name": name,
        "arguments": arguments,
    }
    if namespace:
        item["namespace"] = namespace
    return item


def custom_tool_call_item(
    call_id: str | None, name: str, input_: str, status: str, namespace: str | None = None
) -> dict[str, Any]:
    item = {
        "id": new_item_id("custom_tool_call"),
        "type": "custom_tool_call",
        "status": status,
        "call_id": call_id or new_id("call"),
        "name": name,
        "input": input_,
    }
    if namespace:
        item["namespace"] = namespace
    return item


def output_text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}
