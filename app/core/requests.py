"""What a create request asks for that we cannot honour (a 400 naming the `param`), and the
translation of the validated request into a backend `GenerationRequest`.

What can be honoured depends on the route's backend: one that speaks Responses natively
(`Backend.responses_native`: openai, azure, responses) takes hosted tools, their tool choices,
and `truncation: "auto"` as they are; translating backends refuse hosted tools. Log
probabilities are asked of every backend (Chat Completions: `logprobs`/`top_logprobs`)."""

from __future__ import annotations

from typing import Any

from app.backends.base import Backend, GenerationRequest
from app.errors import BadRequestError
from app.schemas.requests import (
    CreateResponseRequest,
    FunctionTool,
    Tool,
    ToolChoiceAllowed,
    ToolChoiceFunction,
    ToolChoiceOther,
)

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


def _not_supported(param: str, what: str) -> BadRequestError:
    return BadRequestError(f"{what} is not supported by this gateway yet.", param=param)


def check_request(request: CreateResponseRequest, backend: Backend) -> None:
    """Raise `BadRequestError` for every field we know but cannot honour on `backend`."""
    native = backend.responses_native
    if request.conversation is not None and request.previous_response_id is not None:
        raise BadRequestError(
            "Use either 'conversation' or 'previous_response_id', not both.",
            param="conversation",
            code="invalid_value",
        )
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
    if request.context_management:
        raise _not_supported("context_management", "Server-side compaction ('context_management')")
    if request.moderation is not None:
        raise _not_supported("moderation", "Moderation ('moderation')")
    for index, value in enumerate(request.include or ()):
        if value not in KNOWN_INCLUDES:
            raise BadRequestError(
                f"Invalid value for 'include[{index}]': {value!r} is not a known include value.",
                param=f"include[{index}]",
                code="invalid_value",
            )
    for index, tool in enumerate(request.tools or ()):
        if not isinstance(tool, FunctionTool) and not native:
            raise BadRequestError(
                f"Tool type {tool.type!r} is not supported by model {request.model!r}: its "
                "backend does not speak the Responses API, so only 'function' tools can be "
                "passed on.",
                param=f"tools[{index}].type",
            )
    _check_tool_choice(request, native)


def _function_names(request: CreateResponseRequest) -> set[str]:
    return {tool.name for tool in request.tools or () if isinstance(tool, FunctionTool)}


def _hosted_types(request: CreateResponseRequest) -> set[str]:
    return {tool.type for tool in request.tools or () if not isinstance(tool, FunctionTool)}


def _check_tool_choice(request: CreateResponseRequest, native: bool) -> None:
    choice = request.tool_choice
    names = _function_names(request)
    hosted = _hosted_types(request)
    if isinstance(choice, ToolChoiceFunction) and choice.name not in names:
        raise BadRequestError(
            f"Tool choice names function {choice.name!r}, which is not in 'tools'.",
            param="tool_choice.name",
        )
    if isinstance(choice, ToolChoiceAllowed):
        for index, allowed in enumerate(choice.tools):
            listed = (
                allowed.get("name") in names
                if allowed.get("type") == "function"
                else allowed.get("type") in hosted
            )
            if not listed:
                raise BadRequestError(
                    "Each of 'tool_choice.tools' must be a tool listed in 'tools'.",
                    param=f"tool_choice.tools[{index}]",
                )
    if isinstance(choice, ToolChoiceOther) and not native:
        raise BadRequestError(
            f"Tool choice type {choice.type!r} is not supported: use 'none', 'auto', 'required', "
            "a function or 'allowed_tools'.",
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
    if not isinstance(tool, FunctionTool):  # hosted: passed on exactly as the client sent it
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


# Responses fields that only a backend speaking Responses natively can use; passed on verbatim.
_NATIVE_FIELDS = (
    "max_tool_calls",
    "top_logprobs",
    "truncation",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "user",
)


def _native_fields(request: CreateResponseRequest) -> dict[str, Any]:
    native = {name: getattr(request, name) for name in _NATIVE_FIELDS}
    if request.text is not None:
        native["verbosity"] = request.text.verbosity
    return {name: value for name, value in native.items() if value is not None}


def generation_request(
    request: CreateResponseRequest, upstream_model: str, items: list[dict[str, Any]]
) -> GenerationRequest:
    tools = [_upstream_tool(tool) for tool in request.tools or ()]
    choice: str | dict[str, Any] | None = None
    if isinstance(request.tool_choice, str):
        choice = request.tool_choice
    elif isinstance(request.tool_choice, ToolChoiceFunction):
        choice = {"type": "function", "name": request.tool_choice.name}
    elif isinstance(request.tool_choice, ToolChoiceAllowed):
        # allowed_tools is a hard limit: the upstream never sees the other tools.
        allowed = {(e.get("type"), e.get("name")) for e in request.tool_choice.tools}
        tools = [t for t in tools if (t["type"], t.get("name")) in allowed]
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
