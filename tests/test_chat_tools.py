"""The pure mapping of namespace and custom tools to Chat Completions functions and back, and
the translation of a real Codex CLI request body (captured from `codex exec`, v0.169.0)."""

from __future__ import annotations

import json
from pathlib import Path

from app.backends.base import GenerationRequest, ToolCallDelta
from app.backends.chat_completions import chunk_deltas, from_chat_completion, to_chat_body
from app.backends.chat_tools import CHAT_NAME_MAX, ChatTools, chat_name
from app.core.requests import dropped_tools, generation_request
from app.schemas.requests import CreateResponseRequest

CODEX_REQUEST = Path(__file__).parent / "fixtures" / "codex_request.json"

NAMESPACE = {
    "type": "namespace",
    "name": "crm",
    "description": "Customer records.",
    "tools": [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}, "strict": False},
        {"type": "custom", "name": "note", "description": "Free text."},
    ],
}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
}


def completion(*calls: tuple[str, str, str]) -> dict:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            for call_id, name, args in calls
        ],
    }
    return {"choices": [{"message": message, "finish_reason": "tool_calls"}]}


def test_namespace_members_become_prefixed_functions() -> None:
    body = to_chat_body(GenerationRequest(model="m", items=[], tools=[NAMESPACE]))
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert names == ["crm__lookup", "crm__note"]
    assert body["tools"][0]["function"]["strict"] is False
    assert body["tools"][1]["function"]["parameters"]["required"] == ["input"]


def test_long_or_odd_names_are_hashed_within_the_limit_and_round_trip() -> None:
    namespace = "mcp.server-with-a-very-long-name-that-goes-on-and-on"
    name = chat_name("read_a_rather_long_resource_name", namespace)
    assert len(name) <= CHAT_NAME_MAX and all(c.isalnum() or c in "_-" for c in name)
    assert name == chat_name("read_a_rather_long_resource_name", namespace)  # deterministic
    assert name != chat_name("read_a_rather_long_resource_names", namespace)
    tools = ChatTools(
        [
            {
                "type": "namespace",
                "name": namespace,
                "tools": [{"type": "function", "name": "read_a_rather_long_resource_name"}],
            }
        ]
    )
    declared = tools.declared(name)
    assert (declared.namespace, declared.name) == (namespace, "read_a_rather_long_resource_name")


def test_upstream_calls_map_back_to_what_was_declared() -> None:
    tools = ChatTools([NAMESPACE, PATCH, {"type": "function", "name": "plain"}])
    generation = from_chat_completion(
        completion(
            ("c1", "crm__lookup", '{"id": 7}'),
            ("c2", "apply_patch", json.dumps({"input": "*** Begin Patch"})),
            ("c3", "plain", "{}"),
            ("c4", "crm__note", "raw text, not JSON"),
        ),
        tools,
    )
    first, patch, plain, note = generation.output
    assert first["type"] == "function_call" and first["name"] == "lookup"
    assert first["namespace"] == "crm" and first["arguments"] == '{"id": 7}'
    assert patch["type"] == "custom_tool_call" and patch["input"] == "*** Begin Patch"
    assert patch["call_id"] == "c2" and patch["id"].startswith("ctc_") and "namespace" not in patch
    assert plain["type"] == "function_call" and "namespace" not in plain
    assert note["type"] == "custom_tool_call" and note["namespace"] == "crm"
    assert note["input"] == "raw text, not JSON"


def test_streamed_tool_call_names_map_back() -> None:
    chunk = {
        "choices": [
            {
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "crm__note", "arguments": ""}}
                    ]
                }
            }
        ]
    }
    deltas, _, _ = chunk_deltas(chunk, ChatTools([NAMESPACE]))
    assert deltas == [
        ToolCallDelta(index=0, call_id="c1", name="note", namespace="crm", custom=True)
    ]


def test_custom_grammar_reaches_the_function_schema() -> None:
    lark, regex = ChatTools(
        [
            PATCH,
            {
                **PATCH,
                "name": "r",
                "format": {"type": "grammar", "syntax": "regex", "definition": "^a+$"},
            },
        ]
    ).functions
    assert "start: /.+/" in lark["function"]["description"]
    assert lark["function"]["description"].startswith("Apply a patch.")
    assert regex["function"]["parameters"]["properties"]["input"]["pattern"] == "^a+$"


def test_replayed_namespace_and_custom_items_use_upstream_names() -> None:
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "lookup",
            "namespace": "crm",
            "arguments": "{}",
        },
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "P"},
        {"type": "function_call_output", "call_id": "c1", "output": "found"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "applied"},
    ]
    body = to_chat_body(GenerationRequest(model="m", items=items, tools=[NAMESPACE, PATCH]))
    assistant = body["messages"][1]
    assert [call["function"] for call in assistant["tool_calls"]] == [
        {"name": "crm__lookup", "arguments": "{}"},
        {"name": "apply_patch", "arguments": '{"input": "P"}'},
    ]
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
        {"role": "tool", "tool_call_id": "c2", "content": "applied"},
    ]


def test_tool_choice_of_a_custom_or_namespaced_tool() -> None:
    request = GenerationRequest(
        model="m",
        items=[],
        tools=[NAMESPACE, PATCH],
        tool_choice={"type": "custom", "name": "apply_patch"},
    )
    assert to_chat_body(request)["tool_choice"] == {
        "type": "function",
        "function": {"name": "apply_patch"},
    }
    request.tool_choice = {"type": "function", "name": "lookup", "namespace": "crm"}
    assert to_chat_body(request)["tool_choice"]["function"]["name"] == "crm__lookup"
    # OpenAI's tool choice has no namespace: a bare name is found among namespace members.
    request.tool_choice = {"type": "function", "name": "lookup"}
    assert to_chat_body(request)["tool_choice"]["function"]["name"] == "crm__lookup"


def test_a_real_codex_request_translates() -> None:
    raw = json.loads(CODEX_REQUEST.read_text())
    request = CreateResponseRequest.model_validate(raw)
    assert request.store is False and request.include == ["reasoning.encrypted_content"]
    items = [item.model_dump(mode="json", exclude_none=True) for item in request.input]  # type: ignore[union-attr]

    class ChatBackend:  # what `dropped_tools` asks of a backend
        responses_native = False

    dropped = dropped_tools(request, ChatBackend())  # type: ignore[arg-type]
    assert dropped == ["web_search"]
    body = to_chat_body(generation_request(request, "qwen3", items, dropped))
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert "exec_command" in names
    namespace = next(t for t in raw["tools"] if t["type"] == "namespace")
    for member in namespace["tools"]:
        assert f"{namespace['name']}__{member['name']}" in names
    assert all(len(name) <= CHAT_NAME_MAX for name in names)
    # Codex's developer messages become system messages, its user turn stays last.
    assert [m["role"] for m in body["messages"]][:2] == ["system", "system"]
    assert body["messages"][-1] == {"role": "user", "content": "say hi"}
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    for key in ("store", "include", "prompt_cache_key", "reasoning", "client_metadata"):
        assert key not in body
