"""The pure Responses ↔ Chat Completions translation, case by case."""

from __future__ import annotations

import pytest

from app.backends.base import GenerationRequest
from app.backends.chat_completions import from_chat_completion, to_chat_body, to_chat_messages


def msg(role: str, *parts: dict) -> dict:
    return {"type": "message", "role": role, "content": list(parts)}


def text(kind: str, value: str) -> dict:
    return {"type": kind, "text": value}


def test_roles_and_text_collapse() -> None:
    messages = to_chat_messages(
        "Be kind.",
        [
            msg("developer", text("input_text", "dev")),
            msg("user", text("input_text", "a"), text("input_text", "b")),
            msg("assistant", {"type": "output_text", "text": "c", "annotations": []}),
        ],
    )
    assert messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "system", "content": "dev"},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "c"},
    ]


def test_tool_calls_join_the_assistant_turn() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    messages = to_chat_messages(
        None,
        [
            msg("user", text("input_text", "q")),
            msg("assistant", {"type": "output_text", "text": "thinking aloud"}),
            {"type": "reasoning", "summary": []},
            call,
            {**call, "call_id": "c2"},
            {"type": "function_call_output", "call_id": "c1", "output": "r1"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [text("input_text", "r2")],
            },
        ],
    )
    assert messages[1]["content"] == "thinking aloud"
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "r2"},
    ]


def test_images_a_tool_returned_follow_the_tool_messages_as_a_user_message() -> None:
    """Chat Completions takes only text in a tool message: an image (or a file) a tool returned
    goes into one user message after the run of tool messages, introduced by its call."""
    image = {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}
    calls = [
        {"type": "function_call", "call_id": f"c{n}", "name": "shot", "arguments": "{}"}
        for n in (1, 2, 3)
    ]
    outputs = [
        {"type": "function_call_output", "call_id": "c1", "output": [image]},
        {"type": "function_call_output", "call_id": "c2", "output": "plain"},
        {
            "type": "function_call_output",
            "call_id": "c3",
            "output": [text("input_text", "a chart"), image],
        },
    ]
    messages = to_chat_messages(None, [msg("user", text("input_text", "q")), *calls, *outputs])
    chat_image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
    }
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "tool", "user"]
    assert messages[2]["content"].startswith("(the tool call's output: 1 attachment(s)")
    assert messages[3]["content"] == "plain" and messages[4]["content"] == "a chart"
    assert messages[5]["content"] == [
        {"type": "text", "text": "Attached by the tool call c1:"},
        chat_image,
        {"type": "text", "text": "Attached by the tool call c3:"},
        chat_image,
    ]
    # Before a later item, not only at the end.
    later = to_chat_messages(None, [calls[0], outputs[0], msg("user", text("input_text", "next"))])
    assert [m["role"] for m in later] == ["assistant", "tool", "user", "user"]
    assert later[2]["content"][1] == chat_image and later[3]["content"] == "next"


def test_file_part() -> None:
    file_part = {
        "type": "input_file",
        "file_data": "data:application/pdf;base64,AA",
        "filename": "a.pdf",
    }
    messages = to_chat_messages(None, [msg("user", text("input_text", "read"), file_part)])
    assert messages[0]["content"][1] == {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
    }


def test_body_leaves_out_what_was_not_asked() -> None:
    body = to_chat_body(GenerationRequest(model="m", items=[msg("user", text("input_text", "x"))]))
    assert body == {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": False}


def test_tool_choice_none_without_tools_is_kept() -> None:
    body = to_chat_body(GenerationRequest(model="m", items=[], tool_choice="none"))
    assert body["tool_choice"] == "none"
    body = to_chat_body(GenerationRequest(model="m", items=[], tool_choice="auto"))
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    "body",
    [None, {}, {"choices": []}, {"choices": [{"message": None}]}, {"choices": "x"}],
)
def test_malformed_completion(body: object) -> None:
    with pytest.raises(ValueError):
        from_chat_completion(body)


def test_empty_answer_is_an_empty_message() -> None:
    generation = from_chat_completion(
        {"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]}
    )
    assert generation.output[0]["content"] == [
        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ]
    assert generation.usage is None and generation.status == "completed"


def test_content_filter_finish() -> None:
    generation = from_chat_completion(
        {"choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]}
    )
    assert (generation.status, generation.incomplete_reason) == ("incomplete", "content_filter")


def test_tool_call_without_id_gets_one() -> None:
    generation = from_chat_completion(
        {
            "choices": [
                {
                    "message": {
                        "content": None,
                        "tool_calls": [{"type": "function", "function": {"name": "f"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    (call,) = generation.output
    # No arguments given: an empty object, valid JSON as the spec's `arguments` must be.
    assert call["call_id"].startswith("call_") and call["arguments"] == "{}"
