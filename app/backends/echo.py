"""`echo`: a built-in deterministic model for smoke tests and demos. No network, no randomness:
it replies with a description of the input it received, and streams that reply word by word.

It exists so that `make run` answers out of the box and so that a client, an agent framework or
a load balancer can be tried against the gateway without any model. It is a testing aid, not a
model: switch it off with `GATEWAY_ECHO_MODEL=` (empty).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

from app.backends.base import (
    Backend,
    Delta,
    Finish,
    Generation,
    GenerationRequest,
    TextDelta,
    Usage,
)
from app.config import ModelConfig
from app.schemas.items import message_item, output_text_part


def _text_of(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return " ".join(
        str(part.get("text") or part.get("refusal") or "")
        for part in content or ()
        if isinstance(part, dict)
    )


def describe(request: GenerationRequest) -> str:
    """The reply: what arrived, counted by kind, then the last user message quoted."""
    kinds: Counter[str] = Counter()
    last_user = None
    for item in request.items:
        kind = item.get("type", "message")
        if kind == "message":
            kind = f"{item.get('role')} message"
            if item.get("role") == "user":
                last_user = _text_of(item)
        kinds[kind] += 1
    counts = ", ".join(f"{count} {kind}{'s' if count > 1 else ''}" for kind, count in kinds.items())
    parts = [f"echo: {len(request.items)} input items ({counts or 'none'})."]
    if request.instructions:
        parts.append(f"Instructions: {len(request.instructions)} characters.")
    if request.tools:
        names = ", ".join(str(tool.get("name") or tool.get("type")) for tool in request.tools)
        parts.append(f"Tools: {names}.")
    if last_user is not None:
        parts.append(f'Last user message: "{last_user}"')
    return " ".join(parts)


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def _usage(request: GenerationRequest, reply: str) -> Usage:
    # Whitespace-separated words stand in for tokens: deterministic and good enough for a demo.
    seen = sum(len(_words(_text_of(item))) for item in request.items)
    return Usage(input_tokens=seen, output_tokens=len(_words(reply)))


class EchoBackend(Backend):
    def __init__(self, config: ModelConfig) -> None:
        self.name = config.name

    async def generate(self, request: GenerationRequest) -> Generation:
        reply = describe(request)
        message = message_item([output_text_part(reply)], "completed")
        return Generation(output=[message], usage=_usage(request, reply))

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        reply = describe(request)
        for word in _words(reply):
            yield TextDelta(word)
        yield Finish(usage=_usage(request, reply))

    async def aclose(self) -> None:
        return None
