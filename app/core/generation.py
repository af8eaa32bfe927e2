"""One generation, shared by foreground requests and background workers: the prepared request,
the Response body, and the loop that turns backend deltas into events and a stored outcome.

`run_generation` is the only place a generation's ending is decided. Where the outcome goes is
the caller's `Sink`: a foreground request inserts the response; a background worker completes
its job under its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from app.backends.base import Finish, GenerationRequest, Usage
from app.backends.registry import Route
from app.core.compaction import ChargedError
from app.core.events import Event, EventLadder
from app.core.requests import echo_text, echo_tools
from app.errors import RESPONSE_ERROR_CODES, GatewayError, StorageError, UpstreamError
from app.ids import new_id
from app.schemas.requests import CreateResponseRequest
from app.schemas.responses import error_object, render_response, usage_object
from app.store.contexts import StoredItem
from app.store.responses import InputEntry

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})


@dataclass(slots=True)
class Context:
    """The input of one generation: inherited history, then this request's own entries."""

    history: list[StoredItem]
    entries: list[InputEntry]
    items: list[dict[str, Any]]  # what the backend sees: history + input, in order
    cache_epoch: int | None = None  # the context cache's, before any of this was read
    # A `previous_response_id` whose history came from the context cache unchecked: that it
    # still exists is checked while the upstream answers (`ResponsesService.create`).
    unverified: str | None = None
    # The stored response whose context `history` is: the previous response, or the stored
    # ancestor of a WebSocket connection's unstored one (`app.core.session`).
    anchor: str | None = None


@dataclass(slots=True)
class Prepared:
    """A create request that passed every check and is ready to generate."""

    request: CreateResponseRequest
    route: Route
    context: Context
    generation: GenerationRequest
    project: str = ""
    conversation_id: str | None = None
    id: str = field(default_factory=lambda: new_id("resp"))
    # The API key that asked (None in open mode), for usage accounting.
    key_id: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    # Hosted tool types left out of the upstream call (`hosted_tools: drop`), for the header.
    dropped_tools: list[str] = field(default_factory=list)
    # A compaction (`POST /v1/responses/compact`): the context as the model would get it,
    # before `generation` added the request for its summary — what an upstream that compacts
    # itself is sent instead (`Backend.compact`).
    unsummarized: GenerationRequest | None = None

    @property
    def storing(self) -> bool:
        return self.request.store is not False


def response_body(
    prepared: Prepared,
    status: str,
    usage: Usage | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
    model: str | None = None,
    reported: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every Response field but `output`, in OpenAI's order. `model` is the model that
    answered, when a fallback did; `reported`, what a Responses upstream said of the fields it
    applied (`Generation.reported`), which the Response reports in their place."""
    request = prepared.request
    reported = reported or {}
    reasoning: dict[str, str | None] = {"effort": None, "summary": None}
    if request.reasoning is not None:
        sent = request.reasoning
        reasoning = {"effort": sent.effort, "summary": sent.summary or sent.generate_summary}
        reasoning.update(
            (key, value)
            for key, value in (("mode", sent.mode), ("context", sent.context))
            if value is not None
        )
    applied = reported.get("reasoning")
    if isinstance(applied, dict):
        reasoning.update(
            (key, value)
            for key, value in applied.items()
            if key in ("effort", "summary", "mode", "context") and value is not None
        )
    cache_options = reported.get("prompt_cache_options")
    if cache_options is None and request.prompt_cache_options is not None:
        # As applied: the defaults filled in (`30m`, `implicit`), which the Response requires.
        sent_options = request.prompt_cache_options
        cache_options = {"ttl": sent_options.ttl or "30m", "mode": sent_options.mode or "implicit"}
    tool_choice: Any = request.tool_choice or "auto"
    if not isinstance(tool_choice, str):
        tool_choice = tool_choice.model_dump(mode="json", exclude_none=True)
    body = {
        "id": prepared.id,
        "object": "response",
        "created_at": prepared.created_at,
        "status": status,
        "background": bool(request.background),
        "completed_at": int(time.time()) if status == "completed" else None,
        "conversation": {"id": prepared.conversation_id} if prepared.conversation_id else None,
        "error": error,
        "frequency_penalty": request.frequency_penalty or 0.0,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "model": model or prepared.route.config.name,
        "parallel_tool_calls": (
            True if request.parallel_tool_calls is None else request.parallel_tool_calls
        ),
        "presence_penalty": request.presence_penalty or 0.0,
        "previous_response_id": request.previous_response_id,
        "prompt": None,
        "prompt_cache_key": request.prompt_cache_key,
        "prompt_cache_retention": reported.get(
            "prompt_cache_retention", request.prompt_cache_retention
        ),
        "reasoning": reasoning,
        "safety_identifier": request.safety_identifier,
        "service_tier": reported.get("service_tier", "default"),
        "store": request.store is not False,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": echo_text(request),
        "tool_choice": tool_choice,
        "tools": echo_tools(request),
        "top_logprobs": request.top_logprobs or 0,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": request.truncation or "disabled",
        "usage": (
            usage_object(
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens,
            )
            if usage is not None
            else None
        ),
    }
    if cache_options is not None:  # OpenAI's schema has it as an object, not null
        body["prompt_cache_options"] = cache_options
    if request.user is not None:  # deprecated; OpenAI's schema has it as a string, not null
        body["user"] = request.user
    return body


# An upstream's answers that refuse the request itself (not the gateway's credentials or
# configuration): asking again cannot help.
_REQUEST_FAULTS = {400, 413, 422}


def failure_code(exc: GatewayError) -> str:
    """The `error.code` of a response that failed with `exc`, from the spec's list
    (`ResponseErrorCode`), which is what tells a client whether to ask again: Codex, for one,
    retries a `server_error` or `rate_limit_exceeded` and stops on `invalid_prompt`. An upstream's
    429 is `rate_limit_exceeded`; a request the upstream refused as invalid (a context too long
    for the model among them) is `invalid_prompt`; the rest (the upstream or the gateway
    failed, or the upstream refused the gateway's credentials or configuration) is
    `server_error`. The `error` event before `response.failed` carries the finer code
    (`context_length_exceeded`, the upstream's own)."""
    if isinstance(exc, UpstreamError):
        if exc.code in RESPONSE_ERROR_CODES:  # a Responses upstream's own
            return exc.code
        if exc.status == 429:
            return "rate_limit_exceeded"
        if exc.upstream_status in _REQUEST_FAULTS:
            return "invalid_prompt"
    return "server_error"


def failure_events(
    ladder: EventLadder, exc: GatewayError, body: dict[str, Any], output: list[dict[str, Any]]
) -> list[Event]:
    """`error` (flat fields plus the nested object OpenAI's live API sends) + `response.failed`."""
    error = {"type": exc.type, "code": exc.code, "message": exc.message, "param": exc.param}
    return [
        ladder.event("error", code=exc.code, message=exc.message, param=exc.param, error=error),
        ladder.event("response.failed", response=render_response(body, output)),
    ]


class Sink(Protocol):
    """Where the outcome of a generation goes."""

    async def finish(
        self, body: dict[str, Any], output: list[dict[str, Any]], events: list[Event]
    ) -> None:
        """Commit the final state; `events` are the closing events, not yet sent."""

    async def interrupted(self, ladder: EventLadder) -> None:
        """The consumer went away or the task was cancelled mid-generation. Runs shielded from
        cancellation, after the upstream request was closed."""


async def run_generation(
    prepared: Prepared, ladder: EventLadder, sink: Sink, opening: Sequence[Event] = ()
) -> AsyncGenerator[Event, None]:
    """Stream the upstream's answer as events, after the `opening` ones (already numbered by
    `ladder`). Exactly one terminal event ends it, yielded after `sink.finish` committed; an
    upstream fault ends it with `error` + `response.failed` (the partial output kept, open
    items closed as incomplete). A consumer gone during `opening` leaves nothing to store: the
    upstream was not called yet."""
    for event in opening:
        yield event
    deltas = prepared.route.backend.stream(prepared.generation)
    try:
        first = True
        async for delta in deltas:
            for event in ladder.feed(delta):
                yield event
            if first:
                # The first output goes to the client now, ahead of the rest of what the same
                # upstream read brought (a whole short answer, often): time to first token is
                # the time to this delta, not to the end of the read.
                first = False
                await asyncio.sleep(0)
        finish = ladder.finish or Finish()
        status = "incomplete" if finish.incomplete_reason else "completed"
        for event in ladder.close_all(status):
            yield event
        body = response_body(
            prepared,
            status,
            finish.usage,
            finish.incomplete_reason,
            model=finish.model,
            reported=finish.reported,
        )
        terminal = ladder.event(f"response.{status}", response=render_response(body, ladder.output))
        await sink.finish(body, ladder.output, [terminal])
        yield terminal
    except (UpstreamError, StorageError) as exc:
        for event in ladder.close_all("incomplete"):
            yield event
        spent = exc.usage if isinstance(exc, ChargedError) else None  # a summary's tokens
        error = error_object(failure_code(exc), exc.message)
        body = response_body(prepared, "failed", spent, error=error)
        closing = failure_events(ladder, exc, body, ladder.output)
        if not isinstance(exc, StorageError):
            try:
                await sink.finish(body, ladder.output, closing)
            except StorageError as storage:
                log.error("could not store failed response %s: %s", prepared.id, storage)
        for event in closing:
            yield event
    except (GeneratorExit, anyio.get_cancelled_exc_class()):
        with anyio.CancelScope(shield=True):
            await deltas.aclose()
            await sink.interrupted(ladder)
        raise
    finally:
        await deltas.aclose()
