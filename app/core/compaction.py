"""Compaction on every backend: `POST /v1/responses/compact` and the `compaction` items it returns.

OpenAI's compaction hands back the conversation's user messages followed by one `compaction`
item whose `encrypted_content` only OpenAI can read; the client sends those items as the input
of its next request instead of the whole history (Codex CLI does so whenever its context fills
up, through this endpoint in older versions and a `compaction_trigger` in 0.169, with no
fallback when the server cannot). The gateway compacts the same way on any
backend, local servers included: the model is asked for a summary of the conversation, and the
summary travels in the item's `encrypted_content` as `rgc1.` + base64url(UTF-8 text). It is
opaque to clients, as OpenAI's is, but not encrypted: it holds nothing the caller did not send
or receive.

A create whose input ends in `{"type": "compaction_trigger"}` (Codex CLI's remote compaction
when it talks to OpenAI, or to us under OpenAI's name) is answered the same way through the
normal response lifecycle: the upstream is asked for the summary, and the response's one output
item is the compaction item (`CompactingBackend`; streamed as `response.output_item.added` /
`.done`). Stored, such a response stands on the context's user messages only
(`ResponsesService.prepare`): the next turn of its `previous_response_id` chain gets those and the
summary, not the history it compacted.

When an item of ours comes back as input, the upstream gets a user message carrying the summary
in its place (`expand`). A `compaction` item the gateway did not make (OpenAI's own) is a hosted
item like any other: passed on as it is to a backend that speaks Responses, refused (400, with
its `param`) by one that does not, left out with `hosted_tools: drop`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from app.backends.base import (
    Backend,
    Delta,
    Finish,
    Generation,
    GenerationRequest,
    NativeEvent,
    TextDelta,
    Usage,
)
from app.errors import BadRequestError, UpstreamError
from app.ids import new_id
from app.schemas.requests import CompactionTriggerItem, CreateResponseRequest
from app.schemas.responses import usage_object

PREFIX = "rgc1."
# Seconds between two `response.compaction.compacting` events while the summary streams in.
PROGRESS_SECONDS = 2.0
_COMPACTING = "response.compaction.compacting"
_TEXT_DELTA = "response.output_text.delta"
# The output room a summary gets on a model with a `context_window` when the request names none.
SUMMARY_TOKENS = 8192
SUMMARY_HEADER = "Summary of the earlier part of this conversation (it was compacted):\n\n"
SUMMARY_PROMPT = (
    "Compact the conversation above into a summary that lets you continue it without the "
    "original messages. Keep every fact, decision, file name, identifier, number, open "
    "question and unfinished task; state what was done, what was found and what is to be done "
    "next. Leave out pleasantries. Write the summary only, with no preamble."
)


# What a compaction request sets aside: the summary call gets no tools and writes free text,
# and it truncates (oldest items first) rather than failing on a context that is too long —
# the case compaction exists for.
UNUSED_FIELDS: dict[str, Any] = {
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "text": None,
    "include": None,
    "top_logprobs": None,
    "truncation": "auto",
}


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
    for item in items:  # a plain loop: half the cost of any() over a generator
        if item.get("type") == "compaction":
            break
    else:
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


class UnusableSummaryError(UpstreamError):
    """The model answered, but with no summary to keep (empty, or cut short): a 502 that
    still carries the tokens the answer cost, so that they are accounted."""

    def __init__(self, message: str, usage: Usage | None) -> None:
        super().__init__(message)
        self.usage = usage

    def wire_usage(self) -> dict[str, Any] | None:
        usage = self.usage
        if usage is None:
            return None
        return usage_object(
            usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens
        )


def summary_text(generation: Generation) -> str:
    """The text of the summary a generation answered with. A summary cut short or missing is
    an upstream fault (502): a client drops its history for what it gets."""
    text = "".join(
        part.get("text", "")
        for item in generation.output
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    ).strip()
    if generation.status != "completed" or not text:
        reason = generation.incomplete_reason or "no text"
        raise UnusableSummaryError(
            f"The model's summary of the context was not usable ({reason}); nothing was "
            "compacted. Retry, or compact with a model that has room to answer.",
            generation.usage,
        )
    return text


def compaction_item(generation: Generation) -> dict[str, Any]:
    return {
        "id": new_id("cmp"),
        "type": "compaction",
        "encrypted_content": encode(summary_text(generation)),
    }


def is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def without_trigger(request: CreateResponseRequest) -> CreateResponseRequest | None:
    """`request` without its closing `compaction_trigger`, and without what a compaction does
    not use (tools, output format): None if it has no trigger. A trigger anywhere else, or
    with what a compaction cannot be, is a 400 naming it."""
    # Only the last item is looked at here (this runs on every create); a trigger anywhere
    # else is refused where every item is checked (`app.core.items.check_item`).
    if isinstance(request.input, str) or not request.input:
        return None
    if not isinstance(request.input[-1], CompactionTriggerItem):
        return None
    last = len(request.input) - 1
    if request.background:
        raise BadRequestError(
            "A compaction ('compaction_trigger') cannot run in the background: send it without "
            "'background', or use POST /v1/responses/compact.",
            param="background",
        )
    if request.conversation is not None:
        raise BadRequestError(
            "A compaction ('compaction_trigger') of a conversation is not supported: name its "
            "context with 'input' or 'previous_response_id', or use POST /v1/responses/compact.",
            param="conversation",
        )
    return request.model_copy(update={**UNUSED_FIELDS, "input": request.input[:last]})


class CompactingBackend(Backend):
    """The backend of a create that ends in `compaction_trigger`: asks the model's own backend
    for the summary (`summary_request` built the request) and answers with the compaction
    item instead of the model's message."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.name = inner.name
        self.responses_native = inner.responses_native

    async def generate(self, request: GenerationRequest) -> Generation:
        result = await self._inner.generate(request)
        return Generation([compaction_item(result)], usage=result.usage, model=result.model)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """The summary is read as a stream (a slow model's long summary is bounded per read,
        not as a whole), with `response.compaction.compacting` as it comes (at most every
        `PROGRESS_SECONDS`, so that a client's idle timeout does not fire), then the
        compaction item, added and done."""
        item_id = new_id("cmp")
        text: list[str] = []
        finish = Finish()
        progress_at: float | None = None
        deltas = self._inner.stream(request)
        async with aclosing(deltas):
            async for delta in deltas:
                if isinstance(delta, Finish):
                    finish = delta
                    continue
                if isinstance(delta, TextDelta):
                    text.append(delta.text)
                elif isinstance(delta, NativeEvent) and delta.event["type"] == _TEXT_DELTA:
                    text.append(str(delta.event.get("delta", "")))
                else:
                    continue
                now = time.monotonic()
                if progress_at is None or now - progress_at >= PROGRESS_SECONDS:
                    progress_at = now
                    yield NativeEvent({"type": _COMPACTING, "item_id": item_id, "output_index": 0})
        answer = Generation(
            [{"type": "message", "content": [{"type": "output_text", "text": "".join(text)}]}],
            status="incomplete" if finish.incomplete_reason else "completed",
            incomplete_reason=finish.incomplete_reason,
            usage=finish.usage,
        )
        item = {
            "id": item_id,
            "type": "compaction",
            "encrypted_content": encode(summary_text(answer)),
        }
        for kind in ("response.output_item.added", "response.output_item.done"):
            yield NativeEvent({"type": kind, "output_index": 0, "item": item})
        yield Finish(usage=finish.usage, model=finish.model)

    async def aclose(self) -> None:  # the inner backend belongs to the registry
        return None


def compacted_response(
    response_id: str, created_at: int, context: list[dict[str, Any]], generation: Generation
) -> dict[str, Any]:
    """The `response.compaction` object: the context's user messages, in order, then one
    compaction item holding the summary of everything."""
    output = [
        {
            "id": item.get("id") or new_id("msg"),
            "type": "message",
            "status": "completed",
            "content": item["content"],
            "role": "user",
        }
        for item in context
        if is_user_message(item)
    ]
    output.append(compaction_item(generation))
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
