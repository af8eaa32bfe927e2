"""Counting input tokens, and fitting a context into a model's window (`truncation`).

Counts use OpenAI's own BPE encodings (`o200k_base`, `cl100k_base`), shipped inside the
`bpe-openai` package, so nothing is downloaded at run time. For OpenAI model families (by the
upstream model's name) that is the model's real tokenizer; the count follows the Chat format's
accounting (a few tokens of framing per message, tool schemas as JSON), so it is exact to within
that framing. For other models (a local Llama or Qwen) it is an estimate: their tokenizers differ,
typically by 10–20 %. Images are estimated by detail (85 tokens low, 765 otherwise); inline files
by their base64 size.

`POST /v1/responses/input_tokens` first asks a local server for its own count
(`Backend.count_tokens`: vLLM's and llama.cpp's `/tokenize`); these counts are its fallback, and
what `context_window` is enforced with on every create (no extra upstream round trip).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from app.backends.base import GenerationRequest
from app.backends.registry import Route
from app.errors import BadRequestError
from app.schemas.requests import CreateResponseRequest

MESSAGE_OVERHEAD = 4  # role and separators of one message, as the Chat format frames it
REPLY_PRIMING = 3  # the assistant turn the model is primed with
IMAGE_TOKENS = {"low": 85}
IMAGE_TOKENS_DEFAULT = 765

_O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "codex", "chatgpt", "gpt-oss")
_CL100K = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada")


def encoding_name(model: str) -> tuple[str, bool]:
    """The encoding to count with, and whether it is the model's own (exact)."""
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith(_O200K):
        return "o200k_base", True
    if name.startswith(_CL100K):
        return "cl100k_base", True
    return "o200k_base", False


@cache
def _encoding(name: str) -> Any:
    # Imported on first use: the encodings take ~0.5 s and ~130 MB to load, which a gateway
    # that never counts (no context_window, no input_tokens calls) should not pay.
    import bpe_openai

    return bpe_openai.get_encoding(name)


def _text_of(item: dict[str, Any]) -> tuple[list[str], int]:
    """The texts of an item to encode, and the tokens estimated for its non-text parts."""
    kind = item.get("type")
    if kind == "function_call":
        return [str(item.get("name", "")), str(item.get("arguments", ""))], 0
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, str):
            return [output], 0
        return _parts(output or [])
    if kind == "reasoning":
        return [part.get("text", "") for part in item.get("content") or []], 0
    return _parts(item.get("content") or [])


def _parts(parts: list[dict[str, Any]]) -> tuple[list[str], int]:
    texts: list[str] = []
    extra = 0
    for part in parts:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "summary_text", "reasoning_text"):
            texts.append(part.get("text", ""))
        elif kind == "refusal":
            texts.append(part.get("refusal", ""))
        elif kind == "input_image":
            extra += IMAGE_TOKENS.get(part.get("detail", "auto"), IMAGE_TOKENS_DEFAULT)
        elif kind == "input_file":
            extra += len(part.get("file_data") or "") // 4
    return texts, extra


def count_tokens(
    model: str,
    instructions: str | None,
    items: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> int:
    encode = _encoding(encoding_name(model)[0]).encode
    total = REPLY_PRIMING
    if instructions:
        total += MESSAGE_OVERHEAD + len(encode(instructions))
    for item in items:
        texts, extra = _text_of(item)
        total += MESSAGE_OVERHEAD + extra + sum(len(encode(text)) for text in texts)
    if tools:
        total += len(encode(orjson.dumps(tools).decode()))
    return total


def reaches(
    model: str,
    instructions: str | None,
    items: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    threshold: int,
) -> bool:
    """Whether the request counts `threshold` tokens or more; counted only when the cheap
    upper bound does not already say no."""
    bound = _bytes_bound(instructions, items) + (len(orjson.dumps(tools)) if tools else 0)
    return bound >= threshold and count_tokens(model, instructions, items, tools) >= threshold


def _bytes_bound(instructions: str | None, items: list[dict[str, Any]]) -> int:
    """A cheap upper bound: no token is shorter than one byte of its text."""
    total = REPLY_PRIMING + len(instructions or "") * 4 + MESSAGE_OVERHEAD
    for item in items:
        texts, extra = _text_of(item)
        total += MESSAGE_OVERHEAD + extra + sum(len(text) * 4 for text in texts)
    return total


def _pair_ids(item: dict[str, Any]) -> str | None:
    if item.get("type") in ("function_call", "function_call_output"):
        return str(item.get("call_id"))
    return None


def fit_context(
    model: str,
    window: int,
    reserve: int,
    instructions: str | None,
    items: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    truncate: bool,
) -> list[dict[str, Any]]:
    """The items that fit `window - reserve` tokens. With `truncate`, the oldest items are
    dropped first — never the instructions, never the newest item, and a tool call never
    without its output (or the reverse). Otherwise, or if even that does not fit: a 400
    `context_length_exceeded`."""
    budget = window - reserve
    if _bytes_bound(instructions, items) + (len(orjson.dumps(tools)) if tools else 0) <= budget:
        return items
    count = count_tokens(model, instructions, items, tools)
    if count <= budget:
        return items
    if truncate:
        fixed = count_tokens(model, instructions, [], tools)
        costs = [count_tokens(model, None, [item]) - REPLY_PRIMING for item in items]
        kept = list(range(len(items)))
        total = count
        while total > budget and len(kept) > 1:
            first = kept[0]
            call = _pair_ids(items[first])
            dropped = [i for i in kept if i == first or (call and _pair_ids(items[i]) == call)]
            if kept[-1] in dropped:
                break  # the newest item belongs to the oldest pair: nothing more can go
            kept = [i for i in kept if i not in dropped]
            total = fixed + sum(costs[i] for i in kept)
        if total <= budget:
            return [items[i] for i in kept]
        count = total
    raise BadRequestError(
        f"The input is {count} tokens; model {model!r} fits {budget} "
        f"(a context window of {window} less {reserve} for the output)."
        + ("" if truncate else " Set 'truncation': 'auto' to drop the oldest items."),
        param="input",
        code="context_length_exceeded",
    )


def fit_generation(
    route: Route, request: CreateResponseRequest, generation: GenerationRequest
) -> None:
    """Apply the route's `context_window` to what the backend will see. A backend that speaks
    Responses natively truncates itself when asked to (`truncation: "auto"` is passed on)."""
    window = route.config.context_window
    auto = request.truncation == "auto"
    if window is None or (auto and route.backend.responses_native):
        return
    generation.items = fit_context(
        route.upstream_model,
        window,
        request.max_output_tokens or 0,
        request.instructions,
        generation.items,
        generation.tools,
        truncate=auto,
    )
