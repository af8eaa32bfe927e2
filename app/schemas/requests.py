"""Wire models of what clients send: `POST /v1/responses` and the input items inside it.

Unknown top-level fields are ignored (real clients send fields newer than any spec: Codex sends
`client_metadata`); item and content models allow extra keys so that a replayed item keeps what
the client sent. Fields we know but cannot honour are rejected in `core`, naming the `param`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
)

# A JSON boolean, as OpenAI takes it: `"yes"` or `1` is a 400, not True.
JsonBool = Annotated[bool, Strict()]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def null_means(default: Any) -> BeforeValidator:
    """Open Responses lets a client send null for a field that has a default (`detail: null`);
    we store and echo the default, which OpenAI's types require."""
    return BeforeValidator(lambda value: default if value is None else value)


# --- content parts ---------------------------------------------------------------------------


class InputText(WireModel):
    type: Literal["input_text"]
    text: str


class InputImage(WireModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Annotated[Literal["low", "high", "auto", "original"], null_means("auto")] = "auto"


class InputFile(WireModel):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(WireModel):
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class Refusal(WireModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")
]


class SummaryText(WireModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(WireModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


# --- input items -----------------------------------------------------------------------------


class MessageItem(WireModel):
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(WireModel):
    type: Literal["function_call"]
    id: str | None = None
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(WireModel):
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str
    output: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class CustomToolCallItem(WireModel):
    type: Literal["custom_tool_call"]
    id: str | None = None
    call_id: str
    name: str
    input: str
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class CustomToolCallOutputItem(WireModel):
    type: Literal["custom_tool_call_output"]
    id: str | None = None
    call_id: str
    output: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(WireModel):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ItemReference(WireModel):
    type: Annotated[Literal["item_reference"], null_means("item_reference")] = "item_reference"
    id: str


class CompactionTriggerItem(WireModel):
    """`{"type": "compaction_trigger"}`, last in `input`: answer with a compaction of the context
    instead of a turn (Codex CLI's remote compaction). Never stored."""

    type: Literal["compaction_trigger"]


# Items of tools OpenAI hosts, replayed by clients that keep their own history (Codex sends
# `store: false` and the whole history each call). Kept as sent; only backends that speak the
# Responses API natively can take them (checked in core).
HOSTED_ITEM_TYPES = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)


class HostedItem(WireModel):
    type: str
    id: str | None = None


def _item_tag(value: Any) -> str:
    """`type` may be omitted on messages (`{role, content}`) and on item references (`{id}`)."""
    if isinstance(value, dict):
        tag = value.get("type")
        if tag is None:
            return "message" if "role" in value or "id" not in value else "item_reference"
        return "hosted" if tag in HOSTED_ITEM_TYPES else str(tag)
    tag = getattr(value, "type", "message")
    return "hosted" if tag in HOSTED_ITEM_TYPES else str(tag)


_ITEM_TAG = Discriminator(
    _item_tag,
    custom_error_type="unsupported_item_type",
    custom_error_message="unsupported input item type",
)
# An item a conversation can hold.
StorableItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[CustomToolCallItem, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[HostedItem, Tag("hosted")],
    _ITEM_TAG,
]
# An item of a create's `input`: those, and the control item that asks for a compaction.
InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[CustomToolCallItem, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[HostedItem, Tag("hosted")]
    | Annotated[CompactionTriggerItem, Tag("compaction_trigger")],
    _ITEM_TAG,
]


# An input item with content of its own, and one as parsed (references not yet resolved).
ConcreteItem = (
    MessageItem
    | FunctionCallItem
    | FunctionCallOutputItem
    | CustomToolCallItem
    | CustomToolCallOutputItem
    | ReasoningItem
    | HostedItem
)
ConcreteInput = ConcreteItem | ItemReference


# --- tools and formats -----------------------------------------------------------------------


class FunctionTool(WireModel):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: JsonBool | None = None


class CustomTool(WireModel):
    """Free-form text input, optionally constrained by `format` (`{type: "grammar", syntax:
    "lark" | "regex", definition}`)."""

    type: Literal["custom"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    format: dict[str, Any] | None = None


class NamespaceMember(WireModel):
    type: Literal["function", "custom"]
    name: str = Field(min_length=1, max_length=128)


class NamespaceTool(WireModel):
    """Function and custom tools grouped under one name (Codex CLI sends its sub-agent tools
    so); members keep every key the client sent."""

    type: Literal["namespace"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    tools: list[NamespaceMember]


class OtherTool(WireModel):
    """Any hosted tool (web_search, file_search, mcp…): validated and rejected (or dropped) in
    core unless the backend speaks Responses natively."""

    type: str


_TOOL_TAGS = ("function", "custom", "namespace")


def _tool_tag(value: Any) -> str:
    tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return tag if tag in _TOOL_TAGS else "other"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[CustomTool, Tag("custom")]
    | Annotated[NamespaceTool, Tag("namespace")]
    | Annotated[OtherTool, Tag("other")],
    Discriminator(_tool_tag),
]


class ToolChoiceFunction(WireModel):
    type: Literal["function"]
    name: str


class ToolChoiceAllowed(WireModel):
    type: Literal["allowed_tools"]
    # OpenAI requires `mode`; Open Responses makes it optional, and its default is auto.
    mode: Literal["auto", "required"] = "auto"
    tools: list[dict[str, Any]]


class ToolChoiceOther(WireModel):
    type: str


def _choice_tag(value: Any) -> str:
    tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return tag if tag in ("function", "allowed_tools") else "other"


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[ToolChoiceFunction, Tag("function")]
        | Annotated[ToolChoiceAllowed, Tag("allowed_tools")]
        | Annotated[ToolChoiceOther, Tag("other")],
        Discriminator(_choice_tag),
    ]
)


class FormatText(WireModel):
    type: Literal["text"]


class FormatJsonSchema(WireModel):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: JsonBool | None = None


class FormatJsonObject(WireModel):
    type: Literal["json_object"]


class TextConfig(WireModel):
    format: Annotated[
        FormatText | FormatJsonSchema | FormatJsonObject,
        Field(discriminator="type"),
        null_means({"type": "text"}),
    ] = Field(default_factory=lambda: FormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(WireModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    # `ReasoningModeEnum`: `standard`, `pro`, or a newer mode's name.
    mode: str | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None


class PromptCacheOptions(WireModel):
    ttl: Literal["30m", "12h"] | None = None  # "12h": the openai SDK's, newer than the spec
    mode: Literal["implicit", "explicit"] | None = None


class StreamOptions(WireModel):
    include_obfuscation: JsonBool | None = None


class ConversationRef(WireModel):
    id: str


# --- the request -----------------------------------------------------------------------------

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


def check_metadata_limits(value: dict[str, str]) -> dict[str, str]:
    if len(value) > METADATA_MAX_KEYS:
        raise ValueError(f"metadata may hold at most {METADATA_MAX_KEYS} keys, got {len(value)}")
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY:
            raise ValueError(f"metadata key {key[:20]!r}… is longer than {METADATA_MAX_KEY}")
        if len(item) > METADATA_MAX_VALUE:
            raise ValueError(
                f"metadata value of key {key!r} is longer than {METADATA_MAX_VALUE} characters"
            )
    return value


Metadata = Annotated[dict[str, str], AfterValidator(check_metadata_limits)]


class ContextManagement(BaseModel):
    """An entry of `context_management`: `compaction` (server-side compaction) is the one
    OpenAI defines; `compact_threshold` is the rendered-token count that triggers it."""

    model_config = ConfigDict(extra="allow")

    type: str
    compact_threshold: int | None = Field(default=None, ge=1000)


class CreateResponseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    store: JsonBool | None = None
    background: JsonBool | None = None
    stream: JsonBool | None = None
    stream_options: StreamOptions | None = None
    include: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: JsonBool | None = None
    max_tool_calls: int | None = Field(default=None, ge=0)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_output_tokens: int | None = Field(default=None, ge=16)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    truncation: Literal["auto", "disabled"] | None = None
    metadata: Metadata | None = None
    service_tier: (
        Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"] | None
    ) = None
    user: str | None = None
    # 128, as the openai SDK documents it (the spec file says 64; a SHA-512 hex digest is 128).
    safety_identifier: str | None = Field(default=None, max_length=128)
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    prompt: dict[str, Any] | None = None
    context_management: list[ContextManagement] | None = Field(default=None, min_length=1)
    moderation: dict[str, Any] | None = None


class ContextRequest(CreateResponseRequest):
    """The body of `POST /v1/responses/input_tokens` and `/compact`: a create's fields, with an
    `input` that may be null (their specs allow it: the context is `previous_response_id`'s or
    the conversation's alone)."""

    input: Annotated[str | list[InputItem], null_means([])] = Field(default_factory=list)


# --- conversations ---------------------------------------------------------------------------

CONVERSATION_ITEMS_MAX = 20


class CreateConversationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: Metadata | None = None
    items: list[StorableItem] | None = Field(default=None, max_length=CONVERSATION_ITEMS_MAX)


class UpdateConversationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: Metadata | None  # required, but null clears it (the SDK's `Optional[Metadata]`)


class AddConversationItemsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[StorableItem] = Field(min_length=1, max_length=CONVERSATION_ITEMS_MAX)
