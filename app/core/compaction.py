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

Server-side compaction (`context_management: [{"type": "compaction", "compact_threshold": N}]`)
runs the same summary inside an ordinary create, when the context the model would see reaches N
tokens (`compaction_threshold`): the response's output is the compaction item, then the model's
answer to the compacted context (`CompactThenAnswer`). A model on OpenAI or Azure gets the field
itself instead, and compacts with OpenAI's own items; so does a `compaction_trigger` (passed on,
after the context) and `POST /v1/responses/compact` (sent to the upstream's own endpoint, with
the gateway's summary as the fallback where it has none).

When an item of ours comes back as input, the upstream gets a user message carrying the summary
in its place (`expand`). A server-side compaction's item (`rgc2.`) also stands for everything
before it, as OpenAI's does: of that, only the system and developer messages are still sent
(`after_whole`), so a client that keeps sending its whole history, or a conversation, sends the
model the compacted context. A `compaction` item the
gateway did not make (OpenAI's own) is a hosted item like any other: passed on as it is to a
backend that speaks Responses, refused (400, with its `param`) by one that does not, left out
with `hosted_tools: drop`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from app.backends.base import (
    Backend,
    Compaction,
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
# A server-side compaction's item (`context_management`): its summary stands for everything
# before it, the user's messages included (OpenAI: what came before the latest compaction item
# may be dropped, and is not needed).
WHOLE_PREFIX = "rgc2."
_PREFIXES = (PREFIX, WHOLE_PREFIX)
# The item that asks for a compaction when it closes a create's input.
TRIGGER: dict[str, Any] = {"type": "compaction_trigger"}
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


def encode(summary: str, prefix: str = PREFIX) -> str:
    return prefix + base64.urlsafe_b64encode(summary.encode()).decode()


def summary_of(encrypted_content: object) -> str | None:
    """The summary in a compaction item's `encrypted_content`, or None if it is not ours."""
    if not isinstance(encrypted_content, str) or not encrypted_content.startswith(_PREFIXES):
        return None
    try:
        return base64.urlsafe_b64decode(encrypted_content[len(PREFIX) :]).decode()
    except (binascii.Error, ValueError):  # ValueError covers UnicodeDecodeError
        return None


def is_ours(item: dict[str, Any]) -> bool:
    return (
        item.get("type") == "compaction" and summary_of(item.get("encrypted_content")) is not None
    )


def whole_index(items: list[dict[str, Any]]) -> int:
    """The position of the latest server-side compaction item of ours (`rgc2.`), or -1."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if item.get("type") == "compaction":
            content = item.get("encrypted_content")
            if isinstance(content, str) and content.startswith(WHOLE_PREFIX):
                return index
    return -1


def _instructions(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") in ("system", "developer")


def after_whole(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What of `items` a model is still sent once a server-side compaction's item (`rgc2.`)
    stands for what came before it: the system and developer messages before it (instructions,
    not conversation), a tool call whose output comes after it, the item, and everything
    after. Unchanged without such an item."""
    whole = whole_index(items)
    if whole < 0:
        return items
    later_outputs = {
        item.get("call_id")
        for item in items[whole + 1 :]
        if item.get("type") == "function_call_output"
    }
    kept = [
        item
        for item in items[:whole]
        if _instructions(item)
        or (item.get("type") == "function_call" and item.get("call_id") in later_outputs)
    ]
    return [*kept, *items[whole:]]


def expand(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`items` with each compaction item of ours replaced by the user message it stands for,
    and, before a server-side compaction's item, only what `after_whole` keeps."""
    for item in items:  # a plain loop: half the cost of any() over a generator
        if item.get("type") == "compaction":
            break
    else:
        return items
    expanded = []
    for item in after_whole(items):
        summary = (
            summary_of(item.get("encrypted_content")) if item.get("type") == "compaction" else None
        )
        if summary is None:
            expanded.append(item)
            continue
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


class ChargedError(UpstreamError):
    """An upstream fault after the model had already answered part of the request (a summary):
    it carries the tokens spent, so that they are accounted."""

    def __init__(
        self,
        message: str,
        usage: Usage | None,
        *,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.usage = usage

    def wire_usage(self) -> dict[str, Any] | None:
        usage = self.usage
        if usage is None:
            return None
        return usage_object(
            usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens
        )


class UnusableSummaryError(ChargedError):
    """The model answered, but with no summary to keep (empty, or cut short): a 502 that
    still carries the tokens the answer cost."""

    def __init__(self, message: str, usage: Usage | None) -> None:
        super().__init__(message, usage)


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


def compaction_item(generation: Generation, prefix: str = PREFIX) -> dict[str, Any]:
    return {
        "id": new_id("cmp"),
        "type": "compaction",
        "encrypted_content": encode(summary_text(generation), prefix),
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

    def __init__(self, inner: Backend, prefix: str = PREFIX) -> None:
        self._inner = inner
        self._prefix = prefix
        self.name = inner.name
        self.responses_native = inner.responses_native

    async def generate(self, request: GenerationRequest) -> Generation:
        result = await self._inner.generate(request)
        item = compaction_item(result, self._prefix)
        return Generation([item], usage=result.usage, model=result.model)

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
            "encrypted_content": encode(summary_text(answer), self._prefix),
        }
        for kind in ("response.output_item.added", "response.output_item.done"):
            yield NativeEvent({"type": kind, "output_index": 0, "item": item})
        yield Finish(usage=finish.usage, model=finish.model)

    async def aclose(self) -> None:  # the inner backend belongs to the registry
        return None


def compaction_threshold(request: CreateResponseRequest, window: int | None) -> int | None:
    """The token count at which `context_management` asks for server-side compaction: its
    `compact_threshold`, or, where it names none, 80% of the model's `context_window` (none
    known: no compaction). Other entry types are a 400 naming the entry."""
    threshold: int | None = None
    for index, entry in enumerate(request.context_management or ()):
        if entry.type != "compaction":
            raise BadRequestError(
                f"Invalid value for 'context_management[{index}].type': {entry.type!r}. "
                "Supported values are: 'compaction'.",
                param=f"context_management[{index}].type",
                code="invalid_value",
            )
        if entry.compact_threshold is not None:
            threshold = entry.compact_threshold
        elif window is not None and threshold is None:
            threshold = window * 4 // 5
    return threshold


def _added(first: Usage | None, second: Usage | None) -> Usage | None:
    if first is None or second is None:
        return second or first
    return Usage(
        first.input_tokens + second.input_tokens,
        first.output_tokens + second.output_tokens,
        first.cached_tokens + second.cached_tokens,
        first.reasoning_tokens + second.reasoning_tokens,
    )


def _charged(exc: UpstreamError, spent: Usage | None) -> ChargedError:
    """The answer's failure, charged with the summary's tokens (and its own, if any)."""
    usage = _added(spent, exc.usage if isinstance(exc, ChargedError) else None)
    charged = ChargedError(exc.message, usage, status=exc.status, code=exc.code)
    # What else the client and the failed response's code are told (`failure_code`).
    charged.type, charged.param, charged.upstream_status = exc.type, exc.param, exc.upstream_status
    return charged


class CompactThenAnswer(Backend):
    """The backend of a create whose context reached its `compact_threshold`: the summary
    first (as `CompactingBackend` answers a `compaction_trigger`), its compaction item the
    first output item, then the model's answer to the compacted context, the request that
    `answer` builds from that item. Usage is the sum of both calls."""

    def __init__(
        self, inner: Backend, answer: Callable[[dict[str, Any]], GenerationRequest]
    ) -> None:
        self._inner = inner
        self._compacting = CompactingBackend(inner, WHOLE_PREFIX)
        self._answer = answer
        self.name = inner.name
        self.responses_native = inner.responses_native

    async def generate(self, request: GenerationRequest) -> Generation:
        summary = await self._compacting.generate(request)
        item = summary.output[0]
        try:
            result = await self._inner.generate(self._answer(item))
        except UpstreamError as exc:
            raise _charged(exc, summary.usage) from exc
        return Generation(
            [item, *result.output],
            status=result.status,
            incomplete_reason=result.incomplete_reason,
            usage=_added(summary.usage, result.usage),
            model=result.model,
            reported=result.reported,
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        item: dict[str, Any] | None = None
        summary_usage: Usage | None = None
        compacting = self._compacting.stream(request)
        async with aclosing(compacting):
            async for delta in compacting:
                if isinstance(delta, Finish):
                    summary_usage = delta.usage
                    continue
                if isinstance(delta, NativeEvent) and delta.event["type"].endswith("item.done"):
                    item = delta.event["item"]
                yield delta
        assert item is not None  # `CompactingBackend.stream` ends with it, or raises
        try:
            answering = self._inner.stream(self._answer(item))
            async with aclosing(answering):
                async for delta in answering:
                    if isinstance(delta, Finish):
                        delta = Finish(
                            delta.incomplete_reason,
                            _added(summary_usage, delta.usage),
                            delta.model,
                            delta.reported,
                        )
                    yield delta
        except UpstreamError as exc:
            raise _charged(exc, summary_usage) from exc

    async def aclose(self) -> None:  # the inner backend belongs to the registry
        return None


def _compaction_object(
    response_id: str, created_at: int, output: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
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


def _user_messages(context: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a compaction keeps of `context`: its user messages, in order, as output items."""
    return [
        {
            "id": item.get("id") or new_id("msg"),
            "type": "message",
            "status": "completed",
            "content": item["content"],
            "role": "user",
        }
        for item in context[whole_index(context) + 1 :]  # an earlier compaction covers the rest
        if is_user_message(item)
    ]


def upstream_compacted(
    response_id: str, created_at: int, context: list[dict[str, Any]], compacted: Compaction
) -> dict[str, Any]:
    """The `response.compaction` object of an upstream that compacted itself (OpenAI): its
    output items and fields as it sent them (after the context's user messages, if it sent
    its compaction item alone), under our id."""
    output = [*_user_messages(context), *compacted.output] if compacted.bare else compacted.output
    body = _compaction_object(response_id, created_at, output, compacted.usage)
    body.update(compacted.fields)
    return body


def compacted_response(
    response_id: str, created_at: int, context: list[dict[str, Any]], generation: Generation
) -> dict[str, Any]:
    """The `response.compaction` object: the context's user messages, in order, then one
    compaction item holding the summary of everything."""
    output = _user_messages(context)
    output.append(compaction_item(generation))
    return _compaction_object(response_id, created_at, output, generation.usage)
