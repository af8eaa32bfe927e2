"""`echo`: a built-in deterministic model for smoke tests and demos. No network, no randomness:
it replies with a description of the input it received, and streams that reply word by word.

Asked for JSON (`text.format` json_object or json_schema), it answers with a document that
carries the same description and validates against the schema, so structured-output clients
work against it too.

It exists so that `make run` answers out of the box and so that a client, an agent framework or
a load balancer can be tried against the gateway without any model. It is a testing aid, not a
model: switch it off with `GATEWAY_ECHO_MODEL=` (empty).
"""

from __future__ import annotations

import json
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


# The document is built from a client's schema in the request task, so what it costs is bounded
# whatever the schema says: a schema whose simplest instance needs an array of more than
# `MAX_ARRAY_ITEMS`, more than `MAX_NODES` values, `MAX_DEPTH` levels or `MAX_LEAF_CHARS` of
# strings and constants (beyond one copy of the text) gets the plain `{"echo": …}` document
# instead. It could not have been valid anyway, and a 500 or seconds of blocked event loop help
# no one.
MAX_ARRAY_ITEMS = 8
MAX_NODES = 1000
MAX_DEPTH = 32
MAX_LEAF_CHARS = 1_000_000


class _TooLargeError(Exception):
    pass


class _Instance:
    """The simplest JSON value `schema` accepts, every string being `text`: enough for
    structured-output clients (`responses.parse`) to get a document that validates. Covers what
    strict structured outputs allow (objects, arrays, enums, consts, anyOf, local `$ref`s); a
    malformed part of the schema (a `properties` that is not an object, say) becomes `null`."""

    def __init__(self, root: dict[str, Any], text: str) -> None:
        self.root = root
        self.text = text
        self.nodes = 0
        self.chars = 0

    def of(self, schema: Any, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            raise _TooLargeError
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = self.root
            for key in ref[2:].split("/"):
                target = target.get(key) if isinstance(target, dict) else None
            return self.of(target, depth + 1)
        if "const" in schema:
            return self.leaf(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self.leaf(enum[0])
        for key in ("anyOf", "oneOf", "allOf"):
            choices = schema.get(key)
            if isinstance(choices, list) and choices:
                return self.of(choices[0], depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or "properties" in schema:
            properties = schema.get("properties")
            if not isinstance(properties, dict):
                return {}
            return {name: self.of(sub, depth + 1) for name, sub in properties.items()}
        if kind == "array":
            count = _min_items(schema.get("minItems"))
            if count > MAX_ARRAY_ITEMS:
                raise _TooLargeError
            return [self.of(schema.get("items"), depth + 1) for _ in range(count)]
        if kind in ("integer", "number"):
            return self.leaf(schema.get("minimum", 0))
        if kind == "boolean":
            return False
        if kind == "string":
            return self.leaf(self.text)
        return None

    def leaf(self, value: Any) -> Any:
        """`value`, counted against the budget: a client's constant may be megabytes, and
        `$ref`s can repeat it."""
        self.chars += len(value) if isinstance(value, str) else len(json.dumps(value))
        if self.chars > MAX_LEAF_CHARS + len(self.text):
            raise _TooLargeError
        return value


def _min_items(value: Any) -> int:
    # JSON Schema wants a non-negative integer; 2.0 is one, "3" or 2.5 or true are not (ignored).
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not value.is_integer():
        return 0
    return max(int(value), 0)


def reply(request: GenerationRequest) -> str:
    """The description, or — when the request asks for JSON (`text.format`) — a JSON document
    carrying it: `{"echo": …}`, or the simplest instance of the requested schema."""
    text = describe(request)
    fmt = request.text_format or {}
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {}
        try:
            return json.dumps(_Instance(schema, text).of(schema))
        except _TooLargeError:
            pass
    if fmt.get("type") in ("json_object", "json_schema"):
        return json.dumps({"echo": text})
    return text


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
        text = reply(request)
        message = message_item([output_text_part(text)], "completed")
        return Generation(output=[message], usage=_usage(request, text))

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        text = reply(request)
        for word in _words(text):
            yield TextDelta(word)
        yield Finish(usage=_usage(request, text))

    async def aclose(self) -> None:
        return None
