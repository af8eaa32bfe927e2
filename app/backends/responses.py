"""Backends that speak the Responses API natively: OpenAI (`OpenAIBackend`), Azure OpenAI (built in
`azure.py`) and local servers such as vLLM, Ollama or LM Studio (`ResponsesBackend`).

We own the state: every upstream call is stateless (`store: false`) and carries the whole
expanded context as `input`. Reasoning survives across turns only as `encrypted_content`, which
we ask for (`include: ["reasoning.encrypted_content"]`) when the model reasons and send back
verbatim, id included, on the next turn.

Output items are stored under the upstream's ids. The Response id and the stream's sequence
numbers are ours, but item ids are not renamed, for three reasons: OpenAI matches a replayed
reasoning item's id with its encrypted content, so the id has to go back exactly as it came;
the relayed stream events name items by those ids (`item_id`), so renaming would mean rewriting
every event; and OpenAI's ids already carry OpenAI's prefixes (`rs_`, `msg_`, `ws_`…), which is
all our own ids promise. The store tolerates an id seen twice (see README, "How state is
stored"), so an upstream with weak ids cannot break a chain.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from app.backends.base import (
    Backend,
    Compaction,
    Delta,
    Finish,
    Generation,
    GenerationRequest,
    NativeEvent,
    Usage,
)
from app.backends.tokenize import server_root, upstream_token_count
from app.backends.upstream import UpstreamClient, error_message
from app.config import OPENAI_BASE_URL, ModelConfig, public_url
from app.errors import RESPONSE_ERROR_CODES, UpstreamError, UpstreamUnavailableError
from app.ids import new_item_id

log = logging.getLogger(__name__)

ENCRYPTED_REASONING = "reasoning.encrypted_content"
# OpenAI model families that reason; a deployment or model outside them can say `reasoning: true`.
REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5", "codex")
_INCOMPLETE = {"max_output_tokens", "content_filter"}
# Our own stream frames these; the upstream's copies carry the upstream's response id.
# OpenAI also sends undocumented `keepalive` events on long streams, which neither the SDKs'
# event unions nor Open Responses know (they broke openai-node's and openai-java's readers);
# our own SSE comments keep the client's connection alive instead.
_SKIPPED = {"response.created", "response.in_progress", "response.queued", "keepalive"}
# Open Responses names raw reasoning events differently from OpenAI; an upstream that follows
# it is relayed under OpenAI's names, the ones the SDKs know (the fields are the same).
_OPENAI_EVENT_NAMES = {
    "response.reasoning.delta": "response.reasoning_text.delta",
    "response.reasoning.done": "response.reasoning_text.done",
}
_TERMINAL = {"response.completed", "response.incomplete"}
# What of a create body OpenAI's `POST /responses/compact` also takes, besides `model`, `input`
# and `instructions` (it answers 400 to the rest: tools, `store`, `include`…).
# (`safety_identifier`: not in the spec file yet, sent by the openai SDK's `compact`.)
COMPACT_FIELDS = frozenset(
    {
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",
        "service_tier",
    }
)
# `reasoning`'s fields that travel in `GenerationRequest.native`.
_REASONING_FIELDS = {"reasoning_mode": "mode", "reasoning_context": "context"}
# What a Response reports of the fields it was created with, as applied (the tier that served
# it, the caching options, the effective reasoning settings): the gateway's Response says so too.
_REPORTED_FIELDS = ("service_tier", "prompt_cache_retention", "prompt_cache_options", "reasoning")
# The optional fields of its answer that are passed on.
_COMPACTED_FIELDS = ("service_tier", "safety_identifier")
# An upstream without the compact endpoint (a proxy, an API version without it) answers these.
_NO_ENDPOINT = {404, 405, 501}
_NOT_FOUND_CODES = {"model_not_found", "DeploymentNotFound"}  # the model, not the endpoint
TRIGGER = "compaction_trigger"


def wants_encrypted_reasoning(config: ModelConfig, request: GenerationRequest) -> bool:
    """`reasoning: true|false` in the models file decides. Unset, OpenAI and Azure models ask for
    it when the request asks for reasoning or the model belongs to a reasoning family (OpenAI
    answers 400 to the include on models that do not reason); local servers never do."""
    if config.reasoning is not None:
        return config.reasoning
    if config.backend not in ("openai", "azure"):
        return False
    asked = request.reasoning_effort is not None or request.reasoning_summary is not None
    return asked or request.model.lower().startswith(REASONING_FAMILIES)


def to_responses_input(
    items: list[dict[str, Any]], *, raw_reasoning: bool = False
) -> list[dict[str, Any]]:
    """Our stored items → the upstream's `input`.

    Reasoning without `encrypted_content` (produced by another backend, or by a model that was
    not asked for it) is dropped for OpenAI and Azure: a stateless upstream answers 400 to a
    reasoning id it cannot look up. Local servers (`raw_reasoning`: vLLM, whose gpt-oss and
    other reasoning models think in plain text) take it back as they produced it, its
    `reasoning_text` content being the chain of thought a tool-calling turn continues from; one
    with neither content nor encrypted content carries nothing and is dropped everywhere. Ids of
    input-only items (user messages, tool outputs) are ours and mean nothing upstream, so they
    are left out; output items keep their ids.
    """
    wire: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "reasoning" and not (
            item.get("encrypted_content") or (raw_reasoning and item.get("content"))
        ):
            continue
        if (kind == "message" and item.get("role") != "assistant") or (
            kind == "function_call_output"
        ):
            wire.append({key: value for key, value in item.items() if key != "id"})
        else:
            wire.append(item)
    return wire


def to_responses_body(
    request: GenerationRequest,
    *,
    stream: bool,
    encrypted_reasoning: bool,
    penalties: bool,
    raw_reasoning: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "input": to_responses_input(request.items, raw_reasoning=raw_reasoning),
        "store": False,
    }
    if stream:
        # We add no obfuscation padding ourselves; asking for none saves the bytes.
        body.update(stream=True, stream_options={"include_obfuscation": False})
    if request.instructions is not None:
        body["instructions"] = request.instructions
    if request.tools:
        body["tools"] = request.tools
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.text_format is not None:
        body["text"] = {"format": request.text_format}
    if request.reasoning_effort is not None or request.reasoning_summary is not None:
        reasoning = {"effort": request.reasoning_effort, "summary": request.reasoning_summary}
        body["reasoning"] = {key: value for key, value in reasoning.items() if value is not None}
    optional: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_output_tokens": request.max_output_tokens,
    }
    if penalties:  # Open Responses servers take them; OpenAI's create body has no such fields
        optional["presence_penalty"] = request.presence_penalty
        optional["frequency_penalty"] = request.frequency_penalty
    body.update((key, value) for key, value in optional.items() if value is not None)
    include = list(request.include)
    if encrypted_reasoning and ENCRYPTED_REASONING not in include:
        include.append(ENCRYPTED_REASONING)
    if include:
        body["include"] = include
    for key, value in request.native.items():
        if key == "verbosity":
            body.setdefault("text", {})["verbosity"] = value
        elif key in _REASONING_FIELDS:
            body.setdefault("reasoning", {})[_REASONING_FIELDS[key]] = value
        else:
            body[key] = value
    return body


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=int((raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _incomplete_reason(data: dict[str, Any]) -> Any:
    reason = (data.get("incomplete_details") or {}).get("reason")
    return reason if reason in _INCOMPLETE else None


# Optional item fields some upstreams send as null where Open Responses has no null (a string,
# a list or an enum): left out, which every SDK reads as the same absent value.
_NO_NULL = {"reasoning": ("encrypted_content", "content"), "message": ("phase",)}


def tidy_item(item: dict[str, Any]) -> dict[str, Any]:
    keys = _NO_NULL.get(str(item.get("type")), ())
    if any(key in item and item[key] is None for key in keys):
        return {key: value for key, value in item.items() if value is not None or key not in keys}
    return item


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    # Some local servers leave ids out; every stored item needs one.
    item = tidy_item(item)
    return item if item.get("id") else {**item, "id": new_item_id(str(item.get("type")))}


def reported_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields an upstream's Response reports as applied (`_REPORTED_FIELDS`), if set."""
    return {key: data[key] for key in _REPORTED_FIELDS if data.get(key) is not None}


class FailedResponse(LookupError):
    """An upstream's Response that says `failed`: its message and its `error.code`."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = code if isinstance(code, str) else None


def from_response(data: Any) -> Generation:
    """A Response body → a `Generation`. Raises `ValueError` when it is malformed, `LookupError`
    (with the upstream's message) when it reports `failed`."""
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise ValueError("the upstream answer has no output list")
    if data.get("status") == "failed":
        error = data.get("error") or {}
        raise FailedResponse(str(error.get("message") or "no message"), error.get("code"))
    incomplete = data.get("status") == "incomplete"
    return Generation(
        output=[_with_id(item) for item in data["output"] if isinstance(item, dict)],
        status="incomplete" if incomplete else "completed",
        incomplete_reason=_incomplete_reason(data) if incomplete else None,
        usage=_usage(data.get("usage")),
        reported=reported_fields(data),
    )


class ResponsesBackend(Backend):
    """`POST {base_url}/responses` with the `api_key` as a bearer token, unless `upstream` says
    otherwise (Azure)."""

    responses_native = True
    penalties = True
    raw_reasoning = True  # plain-text reasoning goes back (see `to_responses_input`)

    def __init__(self, config: ModelConfig, upstream: UpstreamClient | None = None) -> None:
        self.name = config.name
        self._config = config
        self._upstream = upstream or _bearer_upstream(config, config.base_url or OPENAI_BASE_URL)
        # A local server (vLLM) may count tokens itself; OpenAI and Azure offer no `/tokenize`.
        self._tokenize_root = (
            server_root(public_url(config.base_url))
            if config.backend == "responses" and upstream is None and config.base_url
            else None
        )

    async def count_tokens(self, request: GenerationRequest) -> int | None:
        return await upstream_token_count(self._upstream, self._tokenize_root, request)

    def _body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        return to_responses_body(
            request,
            stream=stream,
            encrypted_reasoning=wants_encrypted_reasoning(self._config, request),
            penalties=self.penalties,
            raw_reasoning=self.raw_reasoning,
        )

    def _failed(self, message: str, code: Any = None) -> UpstreamError:
        """The upstream's Response failed: its code kept where it is one a Response may carry
        (`invalid_prompt` tells a client not to ask again; `failure_code` passes it on)."""
        return UpstreamError(
            f"{self._upstream.where.capitalize()} failed: {self._upstream.redact(message)}",
            code=code if code in RESPONSE_ERROR_CODES else None,
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        data = await self._upstream.post_json(self._body(request, stream=False))
        try:
            return from_response(data)
        except FailedResponse as exc:
            raise self._failed(str(exc), exc.code) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._upstream.malformed(f"a malformed answer: {exc}") from exc

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        async with self._upstream.stream_data(self._body(request, stream=True)) as payloads:
            async for data in payloads:
                if data == "[DONE]":
                    continue
                event = self._parse_event(data)
                kind = event["type"] = _OPENAI_EVENT_NAMES.get(event["type"], event["type"])
                if kind in _SKIPPED:
                    continue
                if kind in _TERMINAL:
                    response = event.get("response") or {}
                    yield Finish(
                        _incomplete_reason(response),
                        _usage(response.get("usage")),
                        reported=reported_fields(response),
                    )
                    return
                if kind == "response.failed":
                    error = (event.get("response") or {}).get("error") or {}
                    raise self._failed(str(error.get("message") or "no message"), error.get("code"))
                if kind == "error":
                    message, code = error_message(orjson.dumps(event))
                    raise self._failed(event.get("message") or message, event.get("code") or code)
                event.pop("sequence_number", None)
                event.pop("obfuscation", None)
                if isinstance(event.get("item"), dict):
                    event["item"] = tidy_item(event["item"])
                yield NativeEvent(event)
        raise UpstreamUnavailableError(
            f"{self._upstream.where.capitalize()} closed the stream before finishing."
        )

    def _parse_event(self, data: str) -> dict[str, Any]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._upstream.malformed(f"a malformed stream event: {data[:200]!r}") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise self._upstream.malformed("a stream event without a type")
        return event

    async def aclose(self) -> None:
        await self._upstream.aclose()


def from_compaction(data: Any) -> Compaction:
    """A `response.compaction` body → a `Compaction`. Raises `ValueError` when it is
    malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise ValueError("the upstream answer has no output list")
    output = [_with_id(item) for item in data["output"] if isinstance(item, dict)]
    if not output or output[-1].get("type") != "compaction":
        raise ValueError("the upstream answer does not end in a compaction item")
    fields = {key: data[key] for key in _COMPACTED_FIELDS if data.get(key) is not None}
    return Compaction(output, _usage(data.get("usage")), fields)


class OpenAIBackend(ResponsesBackend):
    """OpenAI itself (and Azure OpenAI): `base_url` defaults to https://api.openai.com/v1.
    Compaction is OpenAI's own (`POST {url}/compact`)."""

    penalties = False
    raw_reasoning = False
    native_compaction = True

    async def compact(self, request: GenerationRequest) -> Compaction | None:
        body: dict[str, Any] = {"model": request.model, "input": to_responses_input(request.items)}
        if request.instructions is not None:
            body["instructions"] = request.instructions
        body.update((key, value) for key, value in request.native.items() if key in COMPACT_FIELDS)
        url = self._upstream.url + "/compact"
        try:
            data = await self._upstream.post_json(body, url=url)
        except UpstreamError as exc:
            if exc.upstream_status not in _NO_ENDPOINT or exc.code in _NOT_FOUND_CODES:
                raise
            log.info("model %s: %s answered %s", self.name, url, exc.upstream_status)
            return await self._compact_by_trigger(request)
        try:
            return from_compaction(data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._upstream.malformed(f"a malformed compaction: {exc}") from exc

    async def _compact_by_trigger(self, request: GenerationRequest) -> Compaction | None:
        """OpenAI's compaction where its compact endpoint is missing: a create whose input ends
        in `compaction_trigger` (as Codex compacts), its one compaction item. None where the
        upstream refuses the trigger (a 4xx) or answers without exactly one such item: the
        gateway then summarizes."""
        trigger = dataclasses.replace(request, items=[*request.items, {"type": TRIGGER}])
        try:
            data = await self._upstream.post_json(self._body(trigger, stream=False))
        except UpstreamError as exc:
            status = exc.upstream_status
            if status is None or status >= 500 or status == 429:
                raise
            log.info("model %s: no compaction_trigger either (%s): summarizing", self.name, status)
            return None
        try:
            generation = from_response(data)
        except FailedResponse as exc:
            raise self._failed(str(exc), exc.code) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._upstream.malformed(f"a malformed answer: {exc}") from exc
        items = [item for item in generation.output if item.get("type") == "compaction"]
        if len(items) != 1:
            log.info("model %s: no compaction item for compaction_trigger: summarizing", self.name)
            return None
        return Compaction(items, generation.usage, bare=True)


def _bearer_upstream(config: ModelConfig, base_url: str) -> UpstreamClient:
    secret = config.api_key.get_secret_value() if config.api_key else ""
    return UpstreamClient(
        config,
        base_url + "/responses",
        headers={"authorization": f"Bearer {secret}"} if secret else None,
        secrets=lambda: [secret],
    )
