"""Compaction on every backend: `POST /v1/responses/compact` and the `compaction` items it returns.

OpenAI's compaction hands back the conversation's user messages followed by one `compaction`
item whose `encrypted_content` only OpenAI can read; the client sends those items as the input
of its next request instead of the whole history (Codex CLI does so whenever its context fills
up, and has no fallback when the endpoint is missing). The gateway compacts the same way on any
backend, local servers included: the model is asked for a summary of the conversation, and the
summary travels in the item's `encrypted_content` as `rgc1.` + base64url(UTF-8 text). It is
opaque to clients, as OpenAI's is, but not encrypted: it holds nothing the caller did not send
or receive.

When an item of ours comes back as input, the upstream gets a user message carrying the summary
in its place (`expand`). A `compaction` item the gateway did not make (OpenAI's own) is a hosted
item like any other: passed on as it is to a backend that speaks Responses, refused (400, with
its `param`) by one that does not, left out with `hosted_tools: drop`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

from app.backends.base import Generation, GenerationRequest
from app.ids import new_id
from app.schemas.responses import usage_object

PREFIX = "rgc1."
SUMMARY_HEADER = "Summary of the earlier part of this conversation (it was compacted):\n\n"
SUMMARY_PROMPT = (
    "Compact the conversation above into a summary that lets you continue it without the "
    "original messages. Keep every fact, decision, file name, identifier, number, open "
    "question and unfinished task; state what was done, what was found and what is to be done "
    "next. Leave out pleasantries. Write the summary only, with no preamble."
)


def encode(summary: str) -> str:
    return PREFIX + base64.urlsafe_b64encode(summary.encode()).decode()


def summary_of(encrypted_content: object) -> str | None:
    """The summary in a compaction item's `encrypted_content`, or None if it is not ours."""
    if not isinstance(encrypted_content, str) or not encrypted_content.startswith(PREFIX):
        return None
    try:
        return base64.urlsafe_b64decode(encrypted_content[len(PREFIX) :]).decode()
    except (binascii.Error, ValueError):  # ValueError covers UnicodeDecodeError
        return None


def is_ours(item: dict[str, Any]) -> bool:
    return (
        item.get("type") == "compaction" and summary_of(item.get("encrypted_content")) is not None
    )


def expand(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`items` with each compaction item of ours replaced by the user message it stands for."""
    if not any(item.get("type") == "compaction" for item in items):
        return items
    expanded = []
    for item in items:
        summary = (
            summary_of(item.get("encrypted_content")) if item.get("type") == "compaction" else None
        )
        if summary is None:
            expanded.append(item)
        else:
            text = SUMMARY_HEADER + summary
            expanded.append(
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                }
            )
    return expanded


def summary_request(generation: GenerationRequest) -> GenerationRequest:
    """The conversation `generation` would send, then the request for its summary: no tools,
    free text."""
    prompt = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": SUMMARY_PROMPT}],
    }
    return dataclasses.replace(
        generation,
        items=[*generation.items, prompt],
        tools=[],
        tool_choice=None,
        parallel_tool_calls=None,
        text_format=None,
        logprobs=False,
        top_logprobs=None,
        include=[],
    )


def summary_text(generation: Generation) -> str:
    """The text of the summary a generation answered with."""
    return "".join(
        part.get("text", "")
        for item in generation.output
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    ).strip()


def compacted_response(
    response_id: str, created_at: int, context: list[dict[str, Any]], generation: Generation
) -> dict[str, Any]:
    """The `response.compaction` object: the context's user messages, in order, then one
    compaction item holding the summary of everything."""
    output: list[dict[str, Any]] = []
    for item in context:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            output.append(
                {
                    "id": item.get("id") or new_id("msg"),
                    "type": "message",
                    "status": "completed",
                    "content": item["content"],
                    "role": "user",
                }
            )
    output.append(
        {
            "id": new_id("cmp"),
            "type": "compaction",
            "encrypted_content": encode(summary_text(generation)),
        }
    )
    usage = generation.usage
    return {
        "id": response_id,
        "object": "response.compaction",
        "created_at": created_at,
        "output": output,
        "usage": usage_object(
            usage.input_tokens if usage else 0,
            usage.output_tokens if usage else 0,
            usage.cached_tokens if usage else 0,
            usage.reasoning_tokens if usage else 0,
        ),
    }
