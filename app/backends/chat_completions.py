"""Chat Completions backend: local OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LM Studio,
SGLang) and anything else that speaks `POST /v1/chat/completions`.

The translation in both directions is pure functions (`to_chat_body`, `from_chat_completion`),
unit-tested on their own; `ChatCompletionsBackend` only adds the pooled HTTP client and the
mapping of transport faults to our errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from app.backends.base import (
    Backend,
    Delta,
    Finish,
    Generation,
    GenerationRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from app.backends.chat_tools import ChatTools, chat_name, custom_arguments, custom_input
from app.backends.tokenize import server_root, upstream_token_count
from app.backends.upstream import UpstreamClient, error_message
from app.config import ModelConfig, public_url
from app.errors import UpstreamError, UpstreamUnavailableError
from app.schemas.items import (
    custom_tool_call_item,
    function_call_item,
    message_item,
    output_text_part,
    reasoning_item,
)

# --- Responses → Chat Completions ------------------------------------------------------------

_TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
# Chat Completions knows low/high/auto; "original" asks for no downscaling, the closest is high.
_IMAGE_DETAIL = {"low": "low", "high": "high", "auto": "auto", "original": "high"}


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": part[_TEXT_PARTS[kind]]}
    if kind == "input_image":
        return {
            "type": "image_url",
            "image_url": {"url": part["image_url"], "detail": _IMAGE_DETAIL[part["detail"]]},
        }
    if kind == "input_file":
        file: dict[str, Any] = {"file_data": part["file_data"]}
        if part.get("filename"):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise ValueError(f"content part {kind!r} reached the Chat Completions translation")


def _chat_content(content: list[dict[str, Any]], *, text_only: bool) -> str | list[dict[str, Any]]:
    """Text-only content becomes one string: every local server accepts that, not all accept
    arrays. Anything with an image or a file stays an array of parts."""
    if len(content) == 1:  # the common case, without the generators (a deep context
        part = content[0]  # translates hundreds of these per request)
        key = _TEXT_PARTS.get(part["type"])
        if key is not None or text_only:
            return part[key or "text"]  # type: ignore[no-any-return]
        return [_chat_part(part)]
    if text_only or all(part["type"] in _TEXT_PARTS for part in content):
        return "\n".join(part[_TEXT_PARTS.get(part["type"], "text")] for part in content)
    return [_chat_part(part) for part in content]


def _tool_output(
    call_id: str, output: str | list[dict[str, Any]], attachments: list[dict[str, Any]]
) -> str:
    """A tool message's content: Chat Completions allows text only there. An image or a file
    the tool returned goes into `attachments`, for a user message after the tool messages
    (where Chat Completions takes them), introduced by the call it came from."""
    if isinstance(output, str):
        return output
    texts = [part[_TEXT_PARTS[part["type"]]] for part in output if part["type"] in _TEXT_PARTS]
    others = [_chat_part(part) for part in output if part["type"] not in _TEXT_PARTS]
    if others:
        attachments.append({"type": "text", "text": f"Attached by the tool call {call_id}:"})
        attachments += others
        if not texts:
            return f"(the tool call's output: {len(others)} attachment(s), in the next message)"
    return "\n".join(texts)


_TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output")


def to_chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items → Chat Completions messages.

    `developer` becomes `system` (many chat templates know only system). Consecutive
    `function_call` (and `custom_tool_call`) items join the assistant message before them as
    `tool_calls`, which is how Chat Completions represents one assistant turn; a call declared in
    a namespace goes by its flattened name (`chat_tools`). A tool's output is a `tool` message of
    text; images and files in it follow the run of tool messages as one user message (Chat
    Completions takes them nowhere else). Reasoning items are not replayed: most local servers
    reject or ignore reasoning in input messages.
    """
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    attachments: list[dict[str, Any]] = []  # of the tool outputs since the last other item
    for item in items:
        kind = item["type"]
        if attachments and kind not in _TOOL_OUTPUTS:
            messages.append({"role": "user", "content": attachments})
            attachments = []
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            content = _chat_content(item["content"], text_only=role in ("system", "assistant"))
            messages.append({"role": role, "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            arguments = (
                item["arguments"] if kind == "function_call" else custom_arguments(item["input"])
            )
            name = chat_name(item["name"], item.get("namespace"))
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in _TOOL_OUTPUTS:
            call_id = item["call_id"]
            content = _tool_output(call_id, item["output"], attachments)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
    if attachments:
        messages.append({"role": "user", "content": attachments})
    return messages


def _chat_tool_choice(choice: str | dict[str, Any], tools: ChatTools) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    # A named function (possibly in a namespace) or a named custom tool: both are functions here.
    name = tools.upstream_name(choice["name"], choice.get("namespace"))
    return {"type": "function", "function": {"name": name}}


def _response_format(text_format: dict[str, Any]) -> dict[str, Any] | None:
    kind = text_format["type"]
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {"name": text_format["name"], "schema": text_format["schema"]}
        for key in ("description", "strict"):
            if text_format.get(key) is not None:
                schema[key] = text_format[key]
        return {"type": "json_schema", "json_schema": schema}
    return None


def to_chat_body(request: GenerationRequest, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": to_chat_messages(request.instructions, request.items),
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    tools = ChatTools(request.tools)
    functions = tools.functions
    if functions:
        body["tools"] = functions
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None and (functions or request.tool_choice == "none"):
        body["tool_choice"] = _chat_tool_choice(request.tool_choice, tools)
    if request.text_format is not None:
        response_format = _response_format(request.text_format)
        if response_format is not None:
            body["response_format"] = response_format
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    # `max_tokens` rather than `max_completion_tokens`: every local server accepts it.
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_output_tokens,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
    }
    body.update((key, value) for key, value in optional.items() if value is not None)
    return body


# --- Chat Completions → Responses ------------------------------------------------------------


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}


# How long a stream that reported its finish and usage may take to send its `[DONE]`.
FINISHED_GRACE = 0.5


class ReportedError(Exception):
    """An upstream answered 200 with an error object instead of a completion."""


def _arguments(raw: Any) -> str:
    """A tool call's arguments as JSON text: some servers (Ollama) send them as a JSON object;
    missing ones are an empty object, not an empty string."""
    if isinstance(raw, str):
        return raw
    if raw is None:
        return ""
    return orjson.dumps(raw).decode()


def _call_item(
    call_id: str | None, upstream_name: str, arguments: str, status: str, tools: ChatTools
) -> dict[str, Any]:
    declared = tools.declared(upstream_name)
    if declared.custom:
        input_ = custom_input(arguments)
        return custom_tool_call_item(call_id, declared.name, input_, status, declared.namespace)
    # No arguments given: an empty object, valid JSON as a function call's must be.
    arguments = arguments or "{}"
    return function_call_item(call_id, declared.name, arguments, status, declared.namespace)


def from_chat_completion(data: Any, tools: ChatTools | None = None) -> Generation:
    """A Chat Completions response body → output items. Raises `ValueError` on a malformed body.
    `tools` maps the upstream's function names back to what the request declared."""
    tools = tools or ChatTools([])
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and not data.get("choices"):
        raise ReportedError(str(data["error"].get("message") or data["error"]))
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("choices"), list)
        or not data["choices"]
    ):
        raise ValueError("the upstream answer has no choices")
    choice = data["choices"][0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ValueError("the upstream answer's first choice has no message")
    reason = _FINISH.get(choice.get("finish_reason") or "")
    item_status = "incomplete" if reason else "completed"

    output: list[dict[str, Any]] = []
    # vLLM and DeepSeek name it `reasoning_content`; newer vLLM and Ollama name it `reasoning`.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(reasoning))
    tool_calls = message.get("tool_calls") or []
    text = message.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(text, str) and (text or not tool_calls):
        parts.append(output_text_part(text, responses_logprobs(choice)))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts or not tool_calls:
        output.append(message_item(parts or [output_text_part("")], item_status))
    for call in tool_calls:
        function = call.get("function") or {}
        output.append(
            _call_item(
                call.get("id"),
                str(function.get("name") or ""),
                _arguments(function.get("arguments")),
                item_status,
                tools,
            )
        )
    return Generation(
        output=output,
        status="incomplete" if reason else "completed",
        incomplete_reason=reason,  # type: ignore[arg-type]
        usage=_usage(data.get("usage")),
    )


def _token(raw: dict[str, Any]) -> dict[str, Any]:
    token = str(raw.get("token", ""))
    raw_bytes = raw.get("bytes")
    return {
        "token": token,
        "bytes": list(raw_bytes) if raw_bytes is not None else list(token.encode()),
        "logprob": float(raw.get("logprob", 0.0)),
    }


def responses_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat Completions `choice.logprobs.content` → Responses `output_text.logprobs`."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return [
        {**_token(entry), "top_logprobs": [_token(top) for top in entry.get("top_logprobs") or []]}
        for entry in content
    ]


class CallIndexes:
    """The index of each streamed tool call. Servers give it (`index`); some (older Ollama)
    leave it out and send each call whole, or a call's pieces after its first, which carries
    the id: a new id is then a new call, a piece without one continues the last."""

    def __init__(self) -> None:
        self._last_id: str | None = None
        self._count = 0
        self._last = -1

    def of(self, call: dict[str, Any]) -> int:
        call_id = call.get("id")
        index = call.get("index")
        if isinstance(index, int):
            self._count = max(self._count, index + 1)
            self._last = index
        elif self._last < 0 or (call_id and call_id != self._last_id):
            self._last, self._count = self._count, self._count + 1
        if call_id:
            self._last_id = call_id
        return self._last


def chunk_deltas(
    chunk: Any, tools: ChatTools | None = None, indexes: CallIndexes | None = None
) -> tuple[list[Delta], str | None, Usage | None]:
    """One `chat.completion.chunk` → its deltas, its finish reason and its usage (if any).
    `indexes`: the stream's tool-call numbering (a chunk's own `index`, if it has none)."""
    if not isinstance(chunk, dict):
        raise ValueError("a stream chunk is not a JSON object")
    raw_usage = chunk.get("usage")
    usage = _usage(raw_usage) if raw_usage is not None else None
    choices = chunk.get("choices") or []
    if not choices:
        return [], None, usage
    choice = choices[0]
    delta = choice.get("delta") or {}
    deltas: list[Delta] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        deltas.append(ReasoningDelta(reasoning))
    if delta.get("content"):
        logprobs = responses_logprobs(choice) if choice.get("logprobs") else []
        deltas.append(TextDelta(delta["content"], logprobs))
    if delta.get("refusal"):
        deltas.append(RefusalDelta(delta["refusal"]))
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        name = function.get("name")
        declared = (tools or ChatTools([])).declared(name) if name else None
        deltas.append(
            ToolCallDelta(
                index=indexes.of(call) if indexes is not None else int(call.get("index") or 0),
                call_id=call.get("id"),
                name=declared.name if declared else None,
                arguments=_arguments(function.get("arguments")),
                namespace=declared.namespace if declared else None,
                custom=declared.custom if declared else False,
            )
        )
    return deltas, choice.get("finish_reason"), usage


# --- the backend -----------------------------------------------------------------------------


class ChatCompletionsBackend(Backend):
    """`upstream` is given by backends that reach Chat Completions at another URL or with other
    auth (Azure's deployment URLs); by default it is `{base_url}/chat/completions` with the
    `api_key` as a bearer token."""

    def __init__(self, config: ModelConfig, upstream: UpstreamClient | None = None) -> None:
        self.name = config.name
        self._upstream = upstream or _default_upstream(config)
        # Local servers may count tokens themselves; Azure (its own `upstream`) cannot.
        self._tokenize_root = (
            server_root(public_url(config.base_url))
            if upstream is None and config.base_url
            else None
        )

    async def count_tokens(self, request: GenerationRequest) -> int | None:
        return await upstream_token_count(self._upstream, self._tokenize_root, request)

    async def generate(self, request: GenerationRequest) -> Generation:
        data = await self._upstream.post_json(to_chat_body(request))
        try:
            return from_chat_completion(data, ChatTools(request.tools))
        except ReportedError as exc:  # a 200 carrying an error (Ollama: a model not pulled)
            raise UpstreamUnavailableError(
                f"{self._upstream.where.capitalize()} failed: {self._upstream.redact(str(exc))}"
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._upstream.malformed(f"a malformed answer: {exc}") from exc

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        finish_reason: str | None = None
        usage: Usage | None = None
        tools = ChatTools(request.tools)
        indexes = CallIndexes()
        async with self._upstream.stream_data(to_chat_body(request, stream=True)) as payloads:
            async for data in payloads:
                if data == "[DONE]":
                    break
                deltas, reason, chunk_usage = self._parse_chunk(data, tools, indexes)
                finish_reason = reason or finish_reason
                usage = chunk_usage or usage
                for delta in deltas:
                    yield delta
                if reason and chunk_usage is not None:
                    # Finished, usage given: only `[DONE]` may follow, at once, and some servers
                    # never send it and leave the stream open. Waited for briefly (read, the
                    # connection is kept alive), not for the read timeout.
                    try:
                        # `timeout`, not `wait_for`: a cancel of the request is never lost here.
                        async with asyncio.timeout(FINISHED_GRACE):
                            await anext(payloads)
                    except Exception:  # noqa: BLE001 - the answer is whole; what follows is not
                        pass
                    break
            else:
                if finish_reason is None:
                    raise UpstreamUnavailableError(
                        f"{self._upstream.where.capitalize()} closed the stream before finishing."
                    )
        yield Finish(_FINISH.get(finish_reason or ""), usage)  # type: ignore[arg-type]

    def _parse_chunk(
        self, data: str, tools: ChatTools, indexes: CallIndexes
    ) -> tuple[list[Delta], str | None, Usage | None]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._upstream.malformed(f"a malformed stream chunk: {data[:200]!r}") from None
        if isinstance(chunk, dict) and chunk.get("error"):
            message, _code = error_message(orjson.dumps(chunk))
            raise UpstreamError(
                f"{self._upstream.where.capitalize()} failed mid-stream: "
                + self._upstream.redact(message)
            )
        try:
            return chunk_deltas(chunk, tools, indexes)
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._upstream.malformed(f"a malformed stream chunk: {exc}") from exc

    async def aclose(self) -> None:
        await self._upstream.aclose()


def _default_upstream(config: ModelConfig) -> UpstreamClient:
    assert config.base_url is not None  # the models file requires it for this backend
    secret = config.api_key.get_secret_value() if config.api_key else ""
    return UpstreamClient(
        config,
        config.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {secret}"} if secret else None,
        secrets=lambda: [secret],
    )
