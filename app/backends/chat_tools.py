"""Responses tools as Chat Completions functions, and the way back.

Chat Completions knows only flat `function` tools. A `namespace` tool (a group of functions under
one name, as Codex CLI sends) is flattened into one function per member, named
`{namespace}__{name}`; a `custom` tool (free-form text input, optionally a grammar) becomes a
function taking a single string argument `input`. The upstream's calls are mapped back by the
name it used, so the client sees a `function_call` with its `namespace` and the name it declared,
or a `custom_tool_call` with its `input`.

Chat Completions function names must match `^[a-zA-Z0-9_-]{1,64}$` (OpenAI enforces it, vLLM's
tool parsers assume it). A flattened name that would break that is shortened to a prefix plus a
hash of the full name, so the mapping is deterministic: a replayed call whose namespace is no
longer declared still gets the same upstream name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

CHAT_NAME_MAX = 64
_CHAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SEPARATOR = "__"


def chat_name(name: str, namespace: str | None = None) -> str:
    """The upstream function name of `name` (in `namespace`, if any)."""
    if not namespace:
        return name
    full = f"{namespace}{_SEPARATOR}{name}"
    if _CHAT_NAME.match(full):
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    prefix = re.sub(r"[^a-zA-Z0-9_-]", "_", full)[: CHAT_NAME_MAX - len(digest) - 1]
    return f"{prefix}_{digest}"


@dataclass(frozen=True, slots=True)
class ToolName:
    """What the client declared behind one upstream function name."""

    name: str
    namespace: str | None = None
    custom: bool = False


def _function(name: str, tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": name,
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _custom_function(name: str, tool: dict[str, Any]) -> dict[str, Any]:
    """A custom tool's free-form input as the one string argument `input`. A regex grammar
    becomes the string's `pattern` (servers with guided decoding honour it); a Lark grammar
    cannot be said in JSON Schema, so the model is told it in the description."""
    field: dict[str, Any] = {"type": "string", "description": "The tool's free-form input."}
    description = tool.get("description") or ""
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar" and fmt.get("definition"):
        if fmt.get("syntax") == "regex":
            field["pattern"] = fmt["definition"]
        else:
            grammar = f"The input must match this {fmt.get('syntax', 'lark')} grammar:\n"
            description = f"{description}\n\n{grammar}{fmt['definition']}".strip()
    function: dict[str, Any] = {
        "name": name,
        "parameters": {
            "type": "object",
            "properties": {"input": field},
            "required": ["input"],
            "additionalProperties": False,
        },
    }
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


class ChatTools:
    """The upstream functions of one request's tools, and the map back from their names.
    Tools other than function, custom and namespace (hosted tools on a model with
    `hosted_tools: drop`) were removed by core before the backend sees them; any left over
    are skipped here, never sent."""

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.functions: list[dict[str, Any]] = []
        self._names: dict[str, ToolName] = {}
        for tool in tools:
            if tool.get("type") == "namespace":
                for member in tool.get("tools") or ():
                    self._add(member, tool.get("name"))
            else:
                self._add(tool, None)

    def _add(self, tool: dict[str, Any], namespace: str | None) -> None:
        kind = tool.get("type")
        if kind not in ("function", "custom"):
            return
        name = chat_name(str(tool["name"]), namespace)
        self._names[name] = ToolName(str(tool["name"]), namespace, kind == "custom")
        build = _custom_function if kind == "custom" else _function
        self.functions.append(build(name, tool))

    def upstream_name(self, name: str, namespace: str | None = None) -> str:
        """The upstream function a `tool_choice` names. OpenAI's tool choice has no namespace,
        so a bare name that is no top-level tool is looked up among namespace members."""
        if namespace or name in self._names:
            return chat_name(name, namespace)
        members = [key for key, declared in self._names.items() if declared.name == name]
        return members[0] if len(members) == 1 else name

    def declared(self, upstream_name: str) -> ToolName:
        """What the client declared as `upstream_name`; an unknown name (a model that made one
        up) is passed on as a plain function name."""
        return self._names.get(upstream_name) or ToolName(upstream_name)


def custom_input(arguments: str) -> str:
    """A custom tool's input from the upstream's function arguments (`{"input": "..."}`); a
    model that ignored the schema and wrote the raw text keeps its text."""
    try:
        data = json.loads(arguments)
    except ValueError:
        return arguments
    value = data.get("input") if isinstance(data, dict) else None
    return value if isinstance(value, str) else arguments


def custom_arguments(text: str) -> str:
    """A replayed custom tool call's input as the upstream function's arguments."""
    return json.dumps({"input": text}, ensure_ascii=False)
