"""Structured outputs through the `openai` SDK's typed helpers on a Chat Completions-backed
model: `responses.parse` and `responses.stream` with `text_format=` a pydantic model (the
upstream is asked for its strict JSON schema as `response_format`, and `output_parsed` is the
model), chained with `previous_response_id`, and strict function tools made by
`openai.pydantic_function_tool` (`parsed_arguments` on the call)."""

from __future__ import annotations

import json
from typing import Literal

import openai
from openai.lib._parsing._responses import type_to_text_format_param
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from tests.conftest import Stack
from tests.fake_upstream import Reply, tool_call


class Place(BaseModel):
    name: str
    country: str


class Forecast(BaseModel):
    place: Place
    temperature_c: int
    conditions: Literal["sunny", "cloudy", "rain"]
    wind_kmh: int | None


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str
    unit: Literal["celsius", "fahrenheit"]


ROME = Forecast(
    place=Place(name="Rome", country="IT"), temperature_c=24, conditions="sunny", wind_kmh=None
)
# As a model writes it, with spaces: the fake upstream streams it word by word.
ROME_JSON = json.dumps(ROME.model_dump())


def forecast_format() -> dict[str, object]:
    """What the upstream must be asked for: the SDK's strict schema of `Forecast`, unchanged."""
    text_format = type_to_text_format_param(Forecast)
    return {
        "type": "json_schema",
        "json_schema": {
            "name": text_format["name"],
            "schema": text_format["schema"],
            "strict": True,
        },
    }


def test_parse_asks_for_the_schema_and_returns_the_model(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=ROME_JSON))
    parsed = client.responses.parse(
        model="local-llama", input="Forecast for Rome?", text_format=Forecast
    )

    assert parsed.output_parsed == ROME
    assert isinstance(parsed.output_parsed, Forecast)
    assert parsed.text.format.type == "json_schema"
    assert parsed.text.format.name == "Forecast" and parsed.text.format.strict is True
    assert parsed.text.format.schema_ == type_to_text_format_param(Forecast)["schema"]
    sent = gw.upstream.last.body
    assert sent["response_format"] == forecast_format()
    schema = sent["response_format"]["json_schema"]["schema"]
    # The strict form: every property required, none extra, the optional one nullable.
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"place", "temperature_c", "conditions", "wind_kmh"}
    # The stored response keeps the format and parses the same way.
    stored = client.responses.retrieve(parsed.id)
    assert stored.text.format == parsed.text.format
    assert Forecast.model_validate_json(stored.output_text) == ROME


def test_parse_chained_with_previous_response_id(client: openai.OpenAI, gw: Stack) -> None:
    """A second `parse` on the first's id: the upstream sees the first question, the first
    answer (the JSON document) and the new question, and is asked for the schema again."""
    tomorrow = ROME.model_copy(update={"conditions": "rain", "temperature_c": 18, "wind_kmh": 30})
    gw.upstream.enqueue(Reply(content=ROME_JSON), Reply(content=json.dumps(tomorrow.model_dump())))
    first = client.responses.parse(
        model="local-llama", input="Forecast for Rome?", text_format=Forecast
    )
    second = client.responses.parse(
        model="local-llama",
        input="And tomorrow?",
        previous_response_id=first.id,
        text_format=Forecast,
    )

    assert first.output_parsed == ROME
    assert second.output_parsed == tomorrow
    assert second.previous_response_id == first.id
    sent = gw.upstream.last.body
    assert sent["messages"] == [
        {"role": "user", "content": "Forecast for Rome?"},
        {"role": "assistant", "content": ROME_JSON},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert sent["response_format"] == forecast_format()


def test_stream_with_text_format_gives_the_parsed_model(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=ROME_JSON))
    with client.responses.stream(
        model="local-llama", input="Forecast for Rome?", text_format=Forecast
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert len(deltas) > 1 and "".join(deltas) == ROME_JSON
    assert final.output_parsed == ROME
    assert final.status == "completed"
    sent = gw.upstream.last.body
    assert sent["stream"] is True
    assert sent["response_format"] == forecast_format()


def test_parse_refusal_has_no_parsed_output(client: openai.OpenAI, gw: Stack) -> None:
    """A model that refuses instead of answering in the schema: the refusal is a `refusal`
    part the user can read, and there is nothing to parse."""
    gw.upstream.enqueue(Reply(refusal="I can't help with that."))
    parsed = client.responses.parse(
        model="local-llama", input="Forecast for Rome?", text_format=Forecast
    )

    assert parsed.output_parsed is None
    [message] = parsed.output
    assert message.type == "message"
    assert [(part.type, getattr(part, "refusal", None)) for part in message.content] == [
        ("refusal", "I can't help with that.")
    ]


def test_pydantic_function_tool_call_has_parsed_arguments(client: openai.OpenAI, gw: Stack) -> None:
    """`tools=[openai.pydantic_function_tool(GetWeather)]`: the upstream gets the strict
    function, and the call the model makes comes back with `parsed_arguments` a `GetWeather`,
    plain and streamed."""
    arguments = {"city": "Paris", "unit": "celsius"}
    tools = [openai.pydantic_function_tool(GetWeather)]
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("GetWeather", arguments, "call_pt1")]),
        Reply(tool_calls=[tool_call("GetWeather", arguments, "call_pt2")]),
    )
    parsed = client.responses.parse(model="local-llama", input="Weather in Paris?", tools=tools)
    with client.responses.stream(model="local-llama", input="Weather in Paris?", tools=tools) as s:
        done = [e for e in s if e.type == "response.function_call_arguments.done"]
        streamed = s.get_final_response()

    for response, call_id in ((parsed, "call_pt1"), (streamed, "call_pt2")):
        [call] = response.output
        assert call.type == "function_call"
        assert (call.name, call.call_id) == ("GetWeather", call_id)
        assert call.parsed_arguments == GetWeather(city="Paris", unit="celsius")
        assert response.tools[0].type == "function" and response.tools[0].strict is True
    assert [json.loads(e.arguments) for e in done] == [arguments]
    for recorded in gw.upstream.requests:
        assert recorded.body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "GetWeather",
                    "description": "The weather in a city.",
                    "parameters": to_strict_json_schema(GetWeather),
                    "strict": True,
                },
            }
        ]


def test_pydantic_function_tool_output_then_parsed_answer(client: openai.OpenAI, gw: Stack) -> None:
    """The whole loop a typed client runs: the strict tool is called, its output is sent back
    on `previous_response_id`, and the answer parses as the `text_format` model."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("GetWeather", {"city": "Rome", "unit": "celsius"}, "c_r")]),
        Reply(content=ROME_JSON),
    )
    tools = [openai.pydantic_function_tool(GetWeather)]
    first = client.responses.parse(
        model="local-llama", input="Forecast for Rome?", tools=tools, text_format=Forecast
    )
    [call] = first.output
    assert call.type == "function_call" and call.parsed_arguments == GetWeather(
        city="Rome", unit="celsius"
    )
    answer = client.responses.parse(
        model="local-llama",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24"}],
        tools=tools,
        text_format=Forecast,
    )

    assert answer.output_parsed == ROME
    sent = gw.upstream.last.body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "c_r"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "c_r", "content": "sunny, 24"}
    assert sent["response_format"] == forecast_format()
    assert sent["tools"][0]["function"]["strict"] is True
