"""Counting input tokens with a local server's own tokenizer and chat template.

- vLLM serves `POST /tokenize` at its root (beside `/v1`). It takes the chat request itself
  (`model`, `messages`, `tools`, `add_generation_prompt`), applies the model's chat template and
  answers `{"count", "max_model_len", "tokens"}`.
- llama.cpp's server also has `POST /tokenize`, but for text only (`content`); without one it
  answers `{"tokens": []}`. Its `POST /apply-template` renders a chat request into the prompt
  text the model sees, which `/tokenize` then counts.

One request in vLLM's form tells the two apart, so nothing needs configuring. Anything else —
a 404 (Ollama, LM Studio, OpenAI itself), a connection error, a timeout, an answer of another
shape — means "no count" and the caller estimates. These calls never generate, and an input
count is not on the hot path, so nothing is cached: a server that gains `/tokenize` (or loses
it) is noticed on the next call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.backends.chat_tools import ChatTools
from app.backends.upstream import UpstreamClient
from app.errors import UpstreamError

if TYPE_CHECKING:
    from app.backends.base import GenerationRequest

# A count is a quick question: a server that cannot answer it promptly gets estimated instead.
TOKENIZE_TIMEOUT = 10.0


def server_root(base_url: str) -> str:
    """Where a server's `/tokenize` lives: its OpenAI-compatible base URL without `/v1`."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


async def upstream_token_count(
    upstream: UpstreamClient, root: str | None, request: GenerationRequest
) -> int | None:
    """The server at `root` counts the prompt `request` makes in its chat form (both servers'
    `/tokenize` take the Chat Completions request), or None: no `root`, an item with no chat
    form (a file by URL), or any of the cases above."""
    if root is None:
        return None
    # Here, not at the top: chat_completions imports this module.
    from app.backends.chat_completions import to_chat_messages

    try:
        messages = to_chat_messages(request.instructions, request.items)
    except (KeyError, ValueError):  # content create would refuse too
        return None
    tools = ChatTools(request.tools).functions
    chat: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "add_generation_prompt": True,
    }
    if tools:
        chat["tools"] = tools
    try:
        answer = await upstream.post_json(chat, url=f"{root}/tokenize", timeout=TOKENIZE_TIMEOUT)
        if not isinstance(answer, dict):
            return None
        count = answer.get("count")
        if isinstance(count, int) and not isinstance(count, bool):
            return count  # vLLM
        if not isinstance(answer.get("tokens"), list):
            return None
        # llama.cpp: render the chat template, then tokenize the prompt as its chat path does
        # (special tokens added and parsed).
        rendered = await upstream.post_json(
            chat, url=f"{root}/apply-template", timeout=TOKENIZE_TIMEOUT
        )
        prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
        if not isinstance(prompt, str):
            return None
        tokenized = await upstream.post_json(
            {"content": prompt, "add_special": True, "parse_special": True},
            url=f"{root}/tokenize",
            timeout=TOKENIZE_TIMEOUT,
        )
    except UpstreamError:
        return None
    tokens = tokenized.get("tokens") if isinstance(tokenized, dict) else None
    return len(tokens) if isinstance(tokens, list) else None
