"""What a create request asks for that we cannot honour (a 400 naming the `param`), and the
translation of the validated request into a backend `GenerationRequest`.

What can be honoured depends on the route's backend: one that speaks Responses natively
(`Backend.responses_native`: openai, azure, responses) takes hosted tools, their tool choices,
and `truncation: "auto"` as they are; translating backends refuse hosted tools. Log
probabilities are asked of every backend (Chat Completions: `logprobs`/`top_logprobs`).
Function, `custom` and `namespace` tools work everywhere (the Chat Completions translation
flattens them into functions). Hosted tools on a translating backend are refused, or — with the
model's `hosted_tools: drop`, which a local Responses server may want too — left out of the
upstream call with their replayed items (`dropped_tools`). Files by URL reach only the backends
speaking Responses (`check_file_urls`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from app.backends.base import Backend, GenerationRequest
from app.core import compaction
from app.errors import BadRequestError
from app.schemas.requests import (
    HOSTED_ITEM_TYPES,
    CreateResponseRequest,
    CustomTool,
    FunctionTool,
    HostedItem,
    NamespaceTool,
    OtherTool,
    Tool,
    ToolChoiceAllowed,
    ToolChoiceFunction,
    ToolChoiceOther,
)
from app.store.contexts import StoredItem

# `include` values with nothing to include on our backends are accepted, as OpenAI accepts them
# for a request that has no such items; only what would need data we cannot produce is refused.
ACCEPTED_INCLUDES = {
    "reasoning.encrypted_content",
    "message.input_image.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
}
LOGPROBS = "message.output_text.logprobs"
KNOWN_INCLUDES = ACCEPTED_INCLUDES | {LOGPROBS}


def check_includes(values: Iterable[str]) -> None:
    """A 400 naming the first `include` value that is not one of OpenAI's."""
    for index, value in enumerate(values):
        if value not in KNOWN_INCLUDES:
            raise BadRequestError(
                f"Invalid value for 'include[{index}]': {value!r} is not a known include value.",
                param=f"include[{index}]",
                code="invalid_value",
            )


def check_context_source(request: CreateResponseRequest) -> None:
    """A context comes from a conversation or from a previous response, never both (create and
    `input_tokens` alike)."""
    if request.conversation is not None and request.previous_response_id is not None:
        raise BadRequestError(
            "Use either 'conversation' or 'previous_response_id', not both.",
            param="conversation",
            code="invalid_value",
        )


def _not_supported(param: str, what: str) -> BadRequestError:
    return BadRequestError(f"{what} is not supported by this gateway yet.", param=param)


def check_request(
    request: CreateResponseRequest, backend: Backend, hosted_tools: str = "reject"
) -> None:
    """Raise `BadRequestError` for every field we know but cannot honour on `backend`;
    `hosted_tools` is the model's setting (`reject` or `drop`)."""
    native = backend.responses_native
    if not native and hosted_tools != "drop" and not isinstance(request.input, str):
        for index, item in enumerate(request.input):
            if isinstance(item, HostedItem) and not compaction.is_ours(item.model_dump()):
                raise BadRequestError(
                    f"Input items of type {item.type!r} come from hosted tools, which model "
                    f"{request.model!r} cannot run; its backend does not speak the Responses "
                    "API. Set `hosted_tools: drop` on the model to keep them out of its context.",
                    param=f"input[{index}].type",
                )
    check_context_source(request)
    if request.background and request.store is False:
        raise BadRequestError(
            "Background mode needs 'store': a background response must be stored to be "
            "retrieved. Remove 'store': false or 'background': true.",
            param="store",
        )
    if request.conversation is not None and request.store is False:
        raise BadRequestError(
            "A response in a conversation is stored in it: 'store': false cannot be combined "
            "with 'conversation'.",
            param="store",
        )
    if request.prompt is not None:
        raise BadRequestError(
            "Prompt templates ('prompt') are not available on this gateway: send the prompt "
            "text as 'instructions' and 'input'.",
            param="prompt",
        )
    if request.context_management and request.background:
        raise BadRequestError(
            "Server-side compaction ('context_management') cannot run in the background: send "
            "it without 'background'.",
            param="context_management",
        )
    if request.moderation is not None:
        raise _not_supported("moderation", "Moderation ('moderation')")
    check_includes(request.include or ())
    if request.tool_choice == "required" and not request.tools:
        raise BadRequestError(
            "Tool choice 'required' must be specified with the 'tools' parameter.",
            param="tool_choice",
        )
    if not native:
        _check_chat_reasoning(request)
    if not backend.penalties:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(request, name):
                raise BadRequestError(
                    f"'{name}' is not supported by model {request.model!r}: its upstream's "
                    "Responses API has no such field. Leave it out (or send 0).",
                    param=name,
                )
    for index, tool in enumerate(request.tools or ()):
        if isinstance(tool, OtherTool) and not native and hosted_tools != "drop":
            raise BadRequestError(
                f"Tool type {tool.type!r} (tools[{index}]) cannot run on model "
                f"{request.model!r}: its backend speaks Chat Completions, which has no hosted "
                "tools; only 'function', 'custom' and 'namespace' tools can be passed on. To "
                "leave hosted tools out of the upstream call instead, set 'hosted_tools: drop' "
                "on this model in the models file.",
                param=f"tools[{index}].type",
            )
    _check_tool_choice(request, native, hosted_tools == "drop")


def _check_chat_reasoning(request: CreateResponseRequest) -> None:
    """What of `reasoning` a Chat Completions upstream cannot do: a mode other than the standard
    one, and reasoning of earlier turns rendered back (reasoning items are not replayed there:
    the effective context is `current_turn`)."""
    reasoning = request.reasoning
    if reasoning is None:
        return
    if reasoning.mode not in (None, "standard"):
        raise BadRequestError(
            f"Reasoning mode {reasoning.mode!r} is not available on model {request.model!r}: "
            "its backend speaks Chat Completions, which has the standard mode only.",
            param="reasoning.mode",
        )
    if reasoning.context == "all_turns":
        raise BadRequestError(
            f"Model {request.model!r} cannot be shown the reasoning of earlier turns "
            "('reasoning.context': 'all_turns'): its backend speaks Chat Completions, where "
            "reasoning is not sent back. Use 'auto' or 'current_turn'.",
            param="reasoning.context",
        )


def _file_url_part(item: dict[str, Any]) -> int | None:
    """The index of the first file part of `item` sent by URL (not inline), if any."""
    # A message's `content` or a tool output's `output` (no other item has file parts).
    content = item.get("content")
    if content is None:
        content = item.get("output")
    if type(content) is not list:
        return None
    for number, part in enumerate(content):
        if part.get("type") == "input_file" and part.get("file_data") is None:
            return number
    return None


def check_file_urls(
    items: list[dict[str, Any]],
    backend: Backend,
    model: str,
    new: int,
    history: Sequence[StoredItem] = (),
) -> None:
    """`input_file` by `file_url` only reaches upstreams that fetch it themselves (those
    speaking Responses): Chat Completions has no part for it, and the gateway fetches no URL on
    a client's behalf. `new`: how many of `items` (the last ones) are the request's own input;
    `history`, the stored items the others are (each one checked once, then marked)."""
    if backend.responses_native:
        return
    first_new = len(items) - new
    start = 0
    if len(history) == first_new:
        for stored in history:
            if not stored.no_file_url:
                if _file_url_part(stored.data) is not None:
                    break  # found: the loop below names it
                stored.no_file_url = True
        else:
            start = first_new
    for index in range(start, len(items)):
        item = items[index]
        number = _file_url_part(item)
        if number is not None:
            where = "content" if item.get("type") == "message" else "output"
            param = (
                f"input[{index - first_new}].{where}[{number}].file_url"
                if index >= first_new
                else "input"
            )
            raise BadRequestError(
                f"Files by URL ('file_url') cannot be sent to model {model!r}: its backend "
                "speaks Chat Completions, which takes only inline files, and this gateway does "
                "not fetch URLs for clients. Send the file as file_data (base64).",
                param=param,
            )


def dropped_tools(
    request: CreateResponseRequest, backend: Backend, hosted_tools: str = "reject"
) -> list[str]:
    """The hosted tool types left out of the upstream call (in order, once each): with the
    model's `hosted_tools: drop`, all of them — a translating backend cannot run them, and a
    local Responses server (vLLM, Ollama) may not either. Otherwise none: a translating backend
    was refused them in `check_request`, a Responses backend takes them."""
    if backend.responses_native and hosted_tools != "drop":
        return []
    return list(dict.fromkeys(t.type for t in request.tools or () if isinstance(t, OtherTool)))


def _names(request: CreateResponseRequest, kind: str) -> set[str]:
    """Names of the function (or custom) tools, top-level or inside a namespace."""
    names: set[str] = set()
    for tool in request.tools or ():
        if isinstance(tool, NamespaceTool):
            names.update(member.name for member in tool.tools if member.type == kind)
        elif isinstance(tool, FunctionTool | CustomTool) and tool.type == kind:
            names.add(tool.name)
    return names


def _listed(request: CreateResponseRequest, entry: dict[str, Any]) -> bool:
    kind = entry.get("type")
    if kind in ("function", "custom"):
        return entry.get("name") in _names(request, str(kind))
    if kind == "namespace":
        names = {t.name for t in request.tools or () if isinstance(t, NamespaceTool)}
        return entry.get("name") in names
    return kind in {t.type for t in request.tools or () if isinstance(t, OtherTool)}


def _check_tool_choice(request: CreateResponseRequest, native: bool, drops: bool) -> None:
    """`drops`: the model's hosted tools are dropped (`hosted_tools: drop`)."""
    choice = request.tool_choice
    hosted = {t.type for t in request.tools or () if isinstance(t, OtherTool)}
    if isinstance(choice, ToolChoiceFunction) and choice.name not in _names(request, "function"):
        raise BadRequestError(
            f"Tool choice names function {choice.name!r}, which is not in 'tools'.",
            param="tool_choice.name",
        )
    if isinstance(choice, ToolChoiceAllowed):
        for index, allowed in enumerate(choice.tools):
            if not _listed(request, allowed):
                raise BadRequestError(
                    "Each of 'tool_choice.tools' must be a tool listed in 'tools'.",
                    param=f"tool_choice.tools[{index}]",
                )
        runnable = [
            entry
            for entry in choice.tools
            if (native and not drops) or entry.get("type") not in hosted
        ]
        if choice.mode == "required" and not runnable:
            raise BadRequestError(
                f"'tool_choice' requires one of {sorted(hosted)}, which model {request.model!r} "
                "cannot run (its hosted tools are dropped).",
                param="tool_choice.tools",
            )
    if isinstance(choice, ToolChoiceOther) and native and drops and choice.type in hosted:
        raise BadRequestError(
            f"Tool choice forces tool {choice.type!r}, which model {request.model!r} does not "
            "get: its hosted tools are dropped ('hosted_tools: drop').",
            param="tool_choice.type",
        )
    if isinstance(choice, ToolChoiceOther) and not native:
        if choice.type == "custom":
            if getattr(choice, "name", None) not in _names(request, "custom"):
                raise BadRequestError(
                    "Tool choice names a custom tool which is not in 'tools'.",
                    param="tool_choice.name",
                )
            return
        if choice.type in hosted:
            raise BadRequestError(
                f"Tool choice forces tool {choice.type!r}, which model {request.model!r} cannot "
                "run: its hosted tools are dropped ('hosted_tools: drop').",
                param="tool_choice.type",
            )
        raise BadRequestError(
            f"Tool choice type {choice.type!r} is not supported: use 'none', 'auto', 'required', "
            "a function, a custom tool or 'allowed_tools'.",
            param="tool_choice.type",
        )


def echo_tool(tool: FunctionTool) -> dict[str, Any]:
    """A function tool as the Response echoes it: every field present (Open Responses requires
    `strict`; we report the strictness we pass on, which is false unless the client set it)."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": bool(tool.strict),
    }


def _upstream_tool(tool: Tool) -> dict[str, Any]:
    if not isinstance(tool, FunctionTool):  # others: passed on exactly as the client sent them
        return tool.model_dump(mode="json", exclude_none=True)
    wire = echo_tool(tool)
    if tool.strict is None:
        del wire["strict"]
    return wire


def echo_tools(request: CreateResponseRequest) -> list[dict[str, Any]]:
    """The Response's `tools`: function tools with every field, hosted tools as sent."""
    return [
        echo_tool(tool) if isinstance(tool, FunctionTool) else _upstream_tool(tool)
        for tool in request.tools or ()
    ]


def echo_text(request: CreateResponseRequest) -> dict[str, Any]:
    """The Response's `text`, every field present: a `json_schema` format keeps `description`
    (null when unset) and `strict` (false when unset, OpenAI's default), which Open Responses
    requires and the SDK reads as optional."""
    if request.text is None:
        return {"format": {"type": "text"}, "verbosity": "medium"}
    text = request.text.model_dump(mode="json", by_alias=True, exclude_none=True)
    if text["format"]["type"] == "json_schema":
        text["format"] = {"description": None, "strict": False, **text["format"]}
    text.setdefault("verbosity", "medium")
    return text


# Responses fields that only a backend speaking Responses natively can use; passed on verbatim.
_NATIVE_FIELDS = (
    "max_tool_calls",
    "top_logprobs",
    "truncation",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "service_tier",
    "user",
)


def _native_fields(request: CreateResponseRequest) -> dict[str, Any]:
    native = {name: getattr(request, name) for name in _NATIVE_FIELDS}
    if request.prompt_cache_options is not None:
        native["prompt_cache_options"] = request.prompt_cache_options.model_dump(
            mode="json", exclude_none=True
        )
    if request.text is not None:
        native["verbosity"] = request.text.verbosity
    if request.reasoning is not None:
        native["reasoning_mode"] = request.reasoning.mode
        native["reasoning_context"] = request.reasoning.context
    return {name: value for name, value in native.items() if value is not None}


def _only_allowed(tool: dict[str, Any], allowed: set[tuple[Any, Any]]) -> dict[str, Any] | None:
    """The tool as far as `allowed_tools` permits it: a namespace keeps only its allowed members
    (or all of them, if the namespace itself is listed)."""
    if (tool["type"], tool.get("name")) in allowed:
        return tool
    if tool["type"] == "namespace":
        members = [m for m in tool.get("tools") or () if (m.get("type"), m.get("name")) in allowed]
        return {**tool, "tools": members} if members else None
    return None


def generation_request(
    request: CreateResponseRequest,
    upstream_model: str,
    items: list[dict[str, Any]],
    drop: list[str] | None = None,
    *,
    hosted_items: bool = True,
) -> GenerationRequest:
    """`drop`: hosted tool types to leave out (`dropped_tools`); without `hosted_items`, the
    hosted tools' items (`web_search_call`…) are left out of the context too (`hosted_tools:
    drop`: a model that does not get the tools gets none of their calls either)."""
    dropped = set(drop or ())
    items = compaction.expand(items)
    if not hosted_items:
        items = [item for item in items if item.get("type") not in HOSTED_ITEM_TYPES]
    tools = [
        _upstream_tool(tool)
        for tool in request.tools or ()
        if not (isinstance(tool, OtherTool) and tool.type in dropped)
    ]
    choice: str | dict[str, Any] | None = None
    if isinstance(request.tool_choice, str):
        choice = request.tool_choice
    elif isinstance(request.tool_choice, ToolChoiceFunction):
        choice = {"type": "function", "name": request.tool_choice.name}
    elif isinstance(request.tool_choice, ToolChoiceAllowed):
        # allowed_tools is a hard limit: the upstream never sees the other tools.
        allowed = {(e.get("type"), e.get("name")) for e in request.tool_choice.tools}
        tools = [kept for t in tools if (kept := _only_allowed(t, allowed)) is not None]
        choice = request.tool_choice.mode
    elif isinstance(request.tool_choice, ToolChoiceOther):
        choice = request.tool_choice.model_dump(mode="json", exclude_none=True)
    text_format = None
    if request.text is not None:
        text_format = request.text.format.model_dump(mode="json", by_alias=True, exclude_none=True)
    return GenerationRequest(
        model=upstream_model,
        items=items,
        instructions=request.instructions,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=request.parallel_tool_calls,
        text_format=text_format,
        reasoning_effort=request.reasoning.effort if request.reasoning else None,
        temperature=request.temperature,
        top_p=request.top_p,
        max_output_tokens=request.max_output_tokens,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        reasoning_summary=(
            (request.reasoning.summary or request.reasoning.generate_summary)
            if request.reasoning
            else None
        ),
        include=list(request.include or ()),
        native=_native_fields(request),
        logprobs=LOGPROBS in (request.include or ()),
        top_logprobs=request.top_logprobs or None,
    )
