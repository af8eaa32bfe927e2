"""Bad input gets a clear 4xx in OpenAI's envelope, names the param, and costs no upstream call."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def post(gw: Stack, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{gw.gateway.url}/v1/responses", json=body, **kwargs)


def error_of(raw: httpx.Response) -> dict[str, Any]:
    body = raw.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body
    return body["error"]


def test_malformed_json(gw: Stack) -> None:
    raw = httpx.post(
        f"{gw.gateway.url}/v1/responses",
        content=b'{"model": "local-llama", "input": ',
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400
    assert "could not parse the JSON body" in error_of(raw)["message"]
    assert gw.upstream.requests == []


def test_body_not_an_object(gw: Stack) -> None:
    raw = post(gw, ["model"])
    assert raw.status_code == 400 and error_of(raw)["type"] == "invalid_request_error"


def test_missing_model(gw: Stack) -> None:
    error = error_of(post(gw, {"input": "hi"}))
    assert error["param"] == "model" and error["code"] == "missing_required_parameter"


def test_unknown_model(client: openai.OpenAI, gw: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-nonexistent", input="hi")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    assert gw.upstream.requests == []


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("temperature", 2.5, "decimal_above_max_value"),
        ("temperature", -0.1, "decimal_below_min_value"),
        ("top_p", 1.5, "decimal_above_max_value"),
        ("max_output_tokens", 15, "integer_below_min_value"),
        ("temperature", "hot", "invalid_type"),
        ("truncation", "sometimes", "invalid_value"),
    ],
)
def test_out_of_range_values(gw: Stack, field: str, value: Any, code: str) -> None:
    raw = post(gw, {"model": "local-llama", "input": "hi", field: value})
    assert raw.status_code == 400
    error = error_of(raw)
    assert (error["param"], error["code"]) == (field, code)
    assert field in error["message"]
    assert gw.upstream.requests == []


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
    ],
)
def test_metadata_limits(gw: Stack, metadata: dict[str, str]) -> None:
    raw = post(gw, {"model": "local-llama", "input": "hi", "metadata": metadata})
    assert raw.status_code == 400 and error_of(raw)["param"] == "metadata"


def test_metadata_at_the_limits_is_fine(client: openai.OpenAI) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert client.responses.create(model="local-llama", input="x", metadata=metadata).metadata == (
        metadata
    )


def test_conversation_with_previous_response_id(gw: Stack) -> None:
    raw = post(
        gw,
        {
            "model": "local-llama",
            "input": "hi",
            "conversation": "conv_123",
            "previous_response_id": "resp_123",
        },
    )
    assert raw.status_code == 400 and error_of(raw)["param"] == "conversation"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True, "store": False}, "store"),
        ({"conversation": "conv_1", "store": False}, "store"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"include": ["no.such.thing"]}, "include[0]"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "function", "name": "missing"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice.type"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a"}]}]},
            "input[0].content[0].file_data",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"reasoning": {"mode": "pro"}}, "reasoning.mode"),
        ({"reasoning": {"context": "all_turns"}}, "reasoning.context"),
        ({"reasoning": {"context": "every_turn"}}, "reasoning.context"),
        ({"safety_identifier": "x" * 129}, "safety_identifier"),
        ({"prompt_cache_retention": "forever"}, "prompt_cache_retention"),
        ({"prompt_cache_options": {"ttl": "99h"}}, "prompt_cache_options.ttl"),
        ({"stream_options": {"include_obfuscation": "yes"}}, "stream_options.include_obfuscation"),
        ({"store": "yes"}, "store"),
        ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
    ],
)
def test_known_but_unsupported_or_invalid(gw: Stack, extra: dict[str, Any], param: str) -> None:
    raw = post(gw, {"model": "local-llama", "input": "hi", **extra})
    assert raw.status_code == 400, raw.text
    assert error_of(raw)["param"] == param
    assert gw.upstream.requests == []


def test_body_too_large(gw: Stack) -> None:
    raw = post(gw, {"model": "local-llama", "input": "x" * (64 * 1024 * 1024 + 10)})
    assert raw.status_code == 413 and error_of(raw)["code"] == "request_too_large"


def test_unknown_route_and_method(gw: Stack) -> None:
    raw = httpx.get(f"{gw.gateway.url}/v1/nothing-here")
    assert raw.status_code == 404
    assert error_of(raw)["message"] == "Invalid URL (GET /v1/nothing-here)"
    raw = httpx.put(f"{gw.gateway.url}/v1/responses")
    assert raw.status_code == 405 and error_of(raw)["type"] == "invalid_request_error"
    assert raw.headers["allow"] == "POST"  # RFC 9110: a 405 says what the resource allows
    # A trailing slash is another URL, not a redirect to this one.
    made = httpx.post(f"{gw.gateway.url}/v1/responses", json={"model": "local-llama", "input": "x"})
    raw = httpx.get(f"{gw.gateway.url}/v1/responses/{made.json()['id']}/")
    assert raw.status_code == 404
    assert error_of(raw)["message"] == f"Invalid URL (GET /v1/responses/{made.json()['id']}/)"


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="local-llama", input="hi", temperature=9)
    assert caught.value.param == "temperature"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("image_url", "code"),
    [
        ("data:text/plain;base64,aGk=", "invalid_image_url"),
        ("ftp://example.com/a.png", "invalid_image_url"),
        ("data:image/png;base64," + "A" * (28 * 1024 * 1024), "image_too_large"),
    ],
)
def test_bad_images(gw: Stack, image_url: str, code: str) -> None:
    part = {"type": "input_image", "image_url": image_url}
    raw = post(
        gw,
        {"model": "local-llama", "input": [{"role": "user", "content": [part]}]},
        timeout=30,
    )
    assert raw.status_code == 400, raw.text[:200]
    error = error_of(raw)
    assert (error["param"], error["code"]) == ("input[0].content[0].image_url", code)
    assert gw.upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "prefix"),
    [
        ("GET", "/v1/responses/abc", None, "response_id", "resp"),
        ("DELETE", "/v1/responses/abc", None, "response_id", "resp"),
        ("POST", "/v1/responses/abc/cancel", None, "response_id", "resp"),
        ("GET", "/v1/responses/abc/input_items", None, "response_id", "resp"),
        (
            "POST",
            "/v1/responses",
            {"model": "local-llama", "input": "x", "previous_response_id": "abc"},
            "previous_response_id",
            "resp",
        ),
        ("GET", "/v1/conversations/abc", None, "conversation_id", "conv"),
        ("DELETE", "/v1/conversations/abc", None, "conversation_id", "conv"),
        (
            "POST",
            "/v1/responses",
            {"model": "local-llama", "input": "x", "conversation": "abc"},
            "conversation",
            "conv",
        ),
    ],
)
def test_an_id_without_its_prefix_is_invalid_not_missing(
    gw: Stack, method: str, path: str, body: dict[str, Any] | None, param: str, prefix: str
) -> None:
    """As OpenAI answers it: a 400 `invalid_value` saying which prefix the id must have; an id
    with the prefix that names nothing stays a 404."""
    raw = httpx.request(method, f"{gw.gateway.url}{path}", json=body)
    assert raw.status_code == 400, raw.text
    assert error_of(raw) == {
        "message": f"Invalid '{param}': 'abc'. Expected an ID that begins with '{prefix}'.",
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_value",
    }
    assert gw.upstream.requests == []
    missing = httpx.request(
        method,
        f"{gw.gateway.url}{path.replace('abc', prefix + '_x')}",
        json=body and {k: (f"{prefix}_x" if v == "abc" else v) for k, v in body.items()},
    )
    assert missing.status_code == 404, missing.text


def test_retrieve_checks_its_query(gw: Stack) -> None:
    made = httpx.post(f"{gw.gateway.url}/v1/responses", json={"model": "local-llama", "input": "x"})
    url = f"{gw.gateway.url}/v1/responses/{made.json()['id']}"
    assert httpx.get(url, params={"include_obfuscation": "false"}).status_code == 200
    raw = httpx.get(url, params={"include_obfuscation": "maybe"})
    assert raw.status_code == 400 and error_of(raw)["param"] == "include_obfuscation"
