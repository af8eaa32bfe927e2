"""The one small interface every model backend implements.

Core hands a backend a `GenerationRequest` whose `items` are the whole context in Responses item
form (stored history first, then the new input), already resolved and validated. The backend
translates it into its upstream's dialect, performs the I/O and translates back into Responses
output items. Core never sees upstream wire formats; backends never see the database.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(slots=True)
class GenerationRequest:
    """What to generate. Tool, format and tool-choice values are plain wire dicts."""

    model: str
    items: list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    # "none" | "auto" | "required" | {"type": "function", "name": ...}; None lets upstream decide.
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # `include: ["message.output_text.logprobs"]`, with `top_logprobs` alternatives per token.
    logprobs: bool = False
    top_logprobs: int | None = None
    reasoning_summary: str | None = None
    include: list[str] = field(default_factory=list)
    # Responses-only fields (`text.verbosity`, `max_tool_calls`, `top_logprobs`, `truncation`,
    # `prompt_cache_key`, `safety_identifier`, `service_tier`, `user`…) that backends speaking
    # Responses natively pass on verbatim; translating backends ignore them.
    native: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Generation:
    """A finished generation: output items (with ids) in order, and how it ended."""

    output: list[dict[str, Any]]
    status: Literal["completed", "incomplete"] = "completed"
    incomplete_reason: Literal["max_output_tokens", "content_filter"] | None = None
    usage: Usage | None = None
    # The configured model name that answered, when it is not the one asked for (a fallback).
    model: str | None = None
    # What a Responses upstream reported of the response's own fields as applied
    # (`service_tier`, `prompt_cache_options`, `reasoning`…), for the Response to say.
    reported: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Compaction:
    """An upstream's own compaction (`Backend.compact`): its output items (the user messages it
    keeps, then its `compaction` item), usage, and the optional fields of its answer
    (`service_tier`, `safety_identifier`)."""

    output: list[dict[str, Any]]
    usage: Usage | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    # `output` is the compaction item alone (a create with a closing `compaction_trigger`
    # made it): the context's user messages go before it, as the compact endpoint sends them.
    bare: bool = False


# --- streaming deltas: what a backend yields while the upstream answers ------------------------


@dataclass(slots=True)
class TextDelta:
    text: str
    # Responses-shaped log probabilities of this piece's tokens, when they were asked for.
    logprobs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class RefusalDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of one tool call. `index` tells parallel calls apart (they may interleave);
    `call_id` and `name` arrive with the first piece of a call, `arguments` in pieces."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    # Set with `name` by translating backends: the namespace the client declared the function
    # in, and whether it is a `custom` tool (its `arguments` are then the free-form input).
    namespace: str | None = None
    custom: bool = False


@dataclass(slots=True)
class Finish:
    """The last thing a stream yields: how generation ended, and the usage if reported."""

    incomplete_reason: Literal["max_output_tokens", "content_filter"] | None = None
    usage: Usage | None = None
    model: str | None = None  # as in `Generation`
    reported: dict[str, Any] = field(default_factory=dict)  # as in `Generation`


@dataclass(slots=True)
class NativeEvent:
    """A Responses stream event from an upstream that speaks Responses natively, to relay as is
    (output items, hosted-tool progress, annotations…). It carries no `sequence_number`: the
    ladder numbers every event it sends, and maps the upstream's `output_index` to ours."""

    event: dict[str, Any]


Delta = TextDelta | RefusalDelta | ReasoningDelta | ToolCallDelta | NativeEvent | Finish


class Backend(abc.ABC):
    """A model provider reached over the network.

    Contract:
    - `generate` returns a `Generation`, or raises `UpstreamError` (a 4xx keeps the upstream's
      status, a 5xx/connection fault is 502) or `UpstreamTimeoutError` (504). It never raises a
      transport library's own exception, and error messages never carry credentials.
    - Errors raised mid-stream by `stream` follow the same rules.
    - `UpstreamUnavailableError` marks faults that are safe to retry before any output (connection
      errors, 429, 5xx); the router retries and falls back only on those and on timeouts.
    - A backend owns one pooled HTTP client, created in `__init__` and closed by `aclose`, which the
      application lifespan calls once at shutdown.
    """

    name: str
    # The backend speaks Responses natively, so hosted tools (web_search, file_search, mcp…),
    # their tool choices and Responses-only options can be passed on; translating backends
    # refuse them with a 400 before any upstream call.
    responses_native: bool = False
    # The upstream compacts with items of its own (OpenAI's API: `compact`, a closing
    # `compaction_trigger`, `context_management`), which only it can read.
    native_compaction: bool = False
    # The upstream takes `presence_penalty` and `frequency_penalty` (OpenAI's Responses API
    # does not: a non-zero one for it is a 400 before any upstream call).
    penalties: bool = True

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation: ...

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """Yield deltas as the upstream sends them, ending with exactly one `Finish`.

        Raises like `generate`, also mid-stream (dropped connection, malformed chunk, read
        timeout). Closing the iterator early (`aclose()`) closes the upstream request at once.
        """

    async def count_tokens(self, request: GenerationRequest) -> int | None:
        """The upstream's own count of the input tokens `request` would send (its tokenizer and
        chat template), where the upstream offers one (vLLM's and llama.cpp's `/tokenize`).
        None where it offers none, or fails to answer: the caller then counts itself. Never
        raises for an upstream fault; nothing is generated."""
        return None

    async def compact(self, request: GenerationRequest) -> Compaction | None:
        """The upstream's own compaction of `request`'s context (OpenAI's `POST
        /responses/compact`). None where the upstream has no such endpoint: the gateway then
        asks the model for a summary itself. Raises like `generate`."""
        return None

    @abc.abstractmethod
    async def aclose(self) -> None: ...
