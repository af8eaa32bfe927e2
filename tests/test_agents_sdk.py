"""The official `openai-agents` SDK as a client: an agent with a function tool on a Chat
Completions-backed model through the gateway, plain and streamed, chained by
`auto_previous_response_id` or kept in a conversation (`conversation_id`), and over one
WebSocket (`responses_websocket_session`). The fake upstream
calls the tool first, then answers with the tool's result."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    AgentOutputSchema,
    ModelSettings,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    handoff,
    responses_websocket_session,
    set_tracing_disabled,
)
from agents.memory import (
    OpenAIConversationsSession,
    OpenAIResponsesCompactionSession,
    SQLiteSession,
)
from pydantic import BaseModel

from tests.conftest import Stack, access_lines
from tests.fake_upstream import Reply, tool_call

# Traces would go to OpenAI's platform; nothing here may leave the machine.
set_tracing_disabled(True)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny, 24 C in {city}"


def weather_agent(client: openai.AsyncOpenAI) -> Agent[Any]:
    return Agent(
        name="weather",
        instructions="Answer in one sentence.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="local-llama", openai_client=client),
    )


async def run_agent(gw: Stack, streamed: bool, chaining: str) -> tuple[str, str | None]:
    async with openai.AsyncOpenAI(
        base_url=f"{gw.gateway.url}/v1", api_key="sk-client", max_retries=0
    ) as client:
        options: dict[str, Any] = {"auto_previous_response_id": True}
        conversation_id = None
        if chaining == "conversation":
            conversation_id = (await client.conversations.create()).id
            options = {"conversation_id": conversation_id}
        agent = weather_agent(client)
        if streamed:
            result = Runner.run_streamed(agent, "Weather in Paris?", **options)
            kinds = {event.type async for event in result.stream_events()}
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
        else:
            result = await Runner.run(agent, "Weather in Paris?", **options)
        return str(result.final_output), conversation_id


@pytest.mark.parametrize("chaining", ["auto_previous_response_id", "conversation"])
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_calls_its_tool_and_answers(gw: Stack, streamed: bool, chaining: str) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_w1")]),
        Reply(content="It is sunny and 24 C in Paris."),
    )
    final, conversation_id = asyncio.run(run_agent(gw, streamed, chaining))

    assert final == "It is sunny and 24 C in Paris."
    first, second = (recorded.body for recorded in gw.upstream.requests)
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    # The SDK sends only the tool output on the second turn; the gateway supplied the rest
    # from the previous response or the conversation.
    assert second["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
    assert second["messages"][1] == {"role": "user", "content": "Weather in Paris?"}
    call = second["messages"][2]["tool_calls"][0]
    assert call["id"] == "call_w1" and call["function"]["name"] == "get_weather"
    assert second["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_w1",
        "content": "Sunny, 24 C in Paris",
    }
    assert len(second["messages"]) == 4
    if conversation_id is not None:
        with gw.client() as client:
            items = client.conversations.items.list(conversation_id, order="asc").data
        assert [item.type for item in items] == [
            "message",
            "function_call",
            "function_call_output",
            "message",
        ]


def test_agent_session_kept_in_a_conversation(gw: Stack) -> None:
    """`OpenAIConversationsSession`: the SDK itself keeps the history in a conversation (items
    API: create, paginated list, add) and sends it whole on every turn."""

    async def run() -> tuple[list[str], list[Any]]:
        async with openai.AsyncOpenAI(
            base_url=f"{gw.gateway.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            agent = weather_agent(client)
            session = OpenAIConversationsSession(openai_client=client)
            first = await Runner.run(agent, "Weather in Paris?", session=session)
            second = await Runner.run(agent, "What did I ask?", session=session)
            return [str(first.final_output), str(second.final_output)], await session.get_items()

    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_s1")]),
        Reply(content="Sunny in Paris."),
        Reply(content="You asked about Paris."),
    )
    finals, items = asyncio.run(run())
    assert finals == ["Sunny in Paris.", "You asked about Paris."]
    assert [item["type"] for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
        "message",
    ]
    assert [m["role"] for m in gw.upstream.last.body["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]


def test_agent_session_compacted_through_the_gateway(gw: Stack) -> None:
    """`OpenAIResponsesCompactionSession`: after a turn, the SDK has the gateway compact the
    session's history (`responses.compact`) and keeps what comes back; the next turn sends
    that, and the model gets the summary in place of the earlier turn."""

    async def run() -> tuple[list[str], list[Any]]:
        async with openai.AsyncOpenAI(
            base_url=f"{gw.gateway.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            agent = weather_agent(client)
            session = OpenAIResponsesCompactionSession(
                "weather-chat",
                SQLiteSession("weather-chat"),
                client=client,
                model="gpt-4.1-mini",  # a local model under an OpenAI name (conftest)
                should_trigger_compaction=lambda context: True,
            )
            first = await Runner.run(agent, "Weather in Paris?", session=session)
            second = await Runner.run(agent, "And what did I ask?", session=session)
            return [str(first.final_output), str(second.final_output)], await session.get_items()

    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_k1")]),
        Reply(content="Sunny in Paris."),
        Reply(content="The user asked for the weather in Paris; it is sunny, 24 C."),
        Reply(content="You asked about the weather in Paris."),
    )
    finals, items = asyncio.run(run())
    assert finals[0] == "Sunny in Paris."
    summary_call = next(
        recorded.body
        for recorded in gw.upstream.requests
        if recorded.body["messages"][-1]["content"].startswith("Compact the conversation above")
    )
    assert summary_call["model"] == "llama3.2" and "tools" not in summary_call
    assert finals[1] == "You asked about the weather in Paris."
    # The turn after the compaction got the summary instead of the tool call and its output.
    turn = next(
        recorded.body["messages"]
        for recorded in gw.upstream.requests
        if recorded.body["messages"][-1]["content"] == "And what did I ask?"
    )
    assert [m["role"] for m in turn] == ["system", "user", "user", "user"]
    assert turn[1]["content"] == "Weather in Paris?"
    assert turn[2]["content"].endswith("it is sunny, 24 C.")
    # The session holds the user messages and the latest compaction item (it compacted again
    # after the second turn).
    assert [item.get("type") for item in items] == ["message", "message", "compaction"]


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_runs_over_a_websocket_session(
    gw: Stack, streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`responses_websocket_session`: the SDK's Responses model over one WebSocket for the
    whole run, each model call a `response.create` on it."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Oslo"}, "call_ws")]),
        Reply(content="Sunny in Oslo."),
    )

    async def run() -> str:
        async with responses_websocket_session(
            api_key="sk-client", base_url=f"{gw.gateway.url}/v1"
        ) as session:
            agent: Agent[Any] = Agent(
                name="weather",
                instructions="Answer in one sentence.",
                tools=[get_weather],
                model="local-llama",
            )
            if streamed:
                result = session.run_streamed(agent, "Weather in Oslo?")
                kinds = {event.type async for event in result.stream_events()}
                assert "raw_response_event" in kinds
            else:
                result = await session.run(agent, "Weather in Oslo?")
            return str(result.final_output)

    with caplog.at_level(logging.INFO, logger="app.access"):
        assert asyncio.run(run()) == "Sunny in Oslo."
        records = access_lines(caplog, closed_websockets=1)
    lines = [(r.getMessage(), r.path, r.status, getattr(r, "responses", None)) for r in records]
    assert lines == [("websocket", "/v1/responses", 101, 2)], lines
    first, second = (recorded.body for recorded in gw.upstream.requests)
    assert first["messages"][-1] == {"role": "user", "content": "Weather in Oslo?"}
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_ws",
        "content": "Sunny, 24 C in Oslo",
    }


def test_agent_with_server_side_compaction(gw: Stack) -> None:
    """`ModelSettings(context_management=…)`, as the SDK's compaction capability sets it: past
    the threshold the gateway compacts, and the run goes on from the compacted context."""
    gw.upstream.enqueue(
        Reply(content="Summary: the user wants Lima's weather, precisely."),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Lima"}, "call_c1")]),
        Reply(content="Sunny in Lima."),
    )
    long_question = "Weather in Lima? " + "Please be precise. " * 400

    async def run() -> Any:
        async with openai.AsyncOpenAI(
            base_url=f"{gw.gateway.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            agent: Agent[Any] = Agent(
                name="weather",
                tools=[get_weather],
                model=OpenAIResponsesModel(model="local-llama", openai_client=client),
                model_settings=ModelSettings(
                    context_management=[{"type": "compaction", "compact_threshold": 1000}]
                ),
            )
            return await Runner.run(agent, long_question, auto_previous_response_id=True)

    result = asyncio.run(run())
    assert result.final_output == "Sunny in Lima."
    summary, first, second = (recorded.body for recorded in gw.upstream.requests)
    # The question alone passed the threshold: compacted before the model's first answer…
    assert summary["messages"][-2]["content"] == long_question
    assert summary["messages"][-1]["content"].startswith("Compact the conversation above")
    assert [m["role"] for m in first["messages"]] == ["user"]
    assert first["messages"][0]["content"].endswith("the user wants Lima's weather, precisely.")
    # …and the tool's turn went on from the compacted context (small now: no second compaction).
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool"]
    assert second["messages"][2]["content"] == "Sunny, 24 C in Lima"
    # The compaction item reached the SDK, the first output item of the model's first answer.
    kinds = [item.type for item in result.raw_responses[0].output]
    assert kinds == ["compaction", "function_call"]


# --- handoffs, structured output, parallel calls, run settings ------------------------------


class Forecast(BaseModel):
    city: str
    temperature_c: int
    conditions: str


def agents_client(gw: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.gateway.url}/v1", api_key="sk-client", max_retries=0)


def chaining_options(chaining: str) -> dict[str, Any]:
    # "full_history": the SDK resends every item of the run on each turn, no chaining.
    return {"auto_previous_response_id": True} if chaining == "auto_previous_response_id" else {}


def paired_tool_calls(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(call id, tool output) in order, checking every tool message answers a call made by an
    earlier assistant message, and every call is answered exactly once."""
    calls: list[str] = []
    outputs: list[tuple[str, str]] = []
    for message in messages:
        calls += [call["id"] for call in message.get("tool_calls") or ()]
        if message["role"] == "tool":
            assert message["tool_call_id"] in calls, message
            outputs.append((message["tool_call_id"], message["content"]))
    assert sorted(calls) == sorted(call_id for call_id, _ in outputs), messages
    return outputs


@pytest.mark.parametrize("chaining", ["auto_previous_response_id", "full_history"])
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_hands_off_to_another_agent(gw: Stack, chaining: str, streamed: bool) -> None:
    """A triage agent hands off to the weather agent (`handoffs=[…]`), which calls its own tool
    and answers. From the handoff on, the model is asked with the weather agent's instructions
    and tools, and the history holds the handoff call and its output once each."""

    async def run() -> tuple[Any, str]:
        async with agents_client(gw) as client:
            weather = weather_agent(client)
            triage: Agent[Any] = Agent(
                name="triage",
                instructions="Route the user to the right agent.",
                handoffs=[weather],
                model=OpenAIResponsesModel(model="local-llama", openai_client=client),
            )
            transfer = handoff(weather).tool_name
            gw.upstream.enqueue(
                Reply(tool_calls=[tool_call(transfer, {}, "call_h1")]),
                Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_w2")]),
                Reply(content="Sunny and 24 C in Paris."),
            )
            options = chaining_options(chaining)
            if streamed:
                result = Runner.run_streamed(triage, "Weather in Paris?", **options)
                agents_seen = [
                    event.new_agent.name
                    async for event in result.stream_events()
                    if event.type == "agent_updated_stream_event"
                ]
                assert agents_seen == ["triage", "weather"]
            else:
                result = await Runner.run(triage, "Weather in Paris?", **options)
            return result, transfer

    result, transfer = asyncio.run(run())
    assert transfer == "transfer_to_weather"
    assert result.final_output == "Sunny and 24 C in Paris."
    assert result.last_agent.name == "weather"
    # Chained runs name the previous response; unchained ones carry the history themselves.
    ids = [raw.response_id for raw in result.raw_responses]
    with gw.client() as client:
        previous = [client.responses.retrieve(str(i)).previous_response_id for i in ids]
    if chaining == "auto_previous_response_id":
        assert previous == [None, ids[0], ids[1]]
    else:
        assert previous == [None, None, None]

    first, second, third = (recorded.body for recorded in gw.upstream.requests)
    assert first["messages"] == [
        {"role": "system", "content": "Route the user to the right agent."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert [tool["function"]["name"] for tool in first["tools"]] == ["transfer_to_weather"]
    # The weather agent's turns: its instructions, its tool, the whole history once.
    for body in (second, third):
        assert body["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
        assert [tool["function"]["name"] for tool in body["tools"]] == ["get_weather"]
        assert [m["content"] for m in body["messages"] if m["role"] == "system"] == [
            "Answer in one sentence."
        ]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert second["messages"][1] == {"role": "user", "content": "Weather in Paris?"}
    handoff_call = second["messages"][2]["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in handoff_call] == [
        ("call_h1", "transfer_to_weather")
    ]
    [(call_id, output)] = paired_tool_calls(second["messages"])
    assert call_id == "call_h1" and json.loads(output) == {"assistant": "weather"}

    assert [m["role"] for m in third["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert third["messages"][1:4] == second["messages"][1:4]
    assert paired_tool_calls(third["messages"])[1] == ("call_w2", "Sunny, 24 C in Paris")
    assert third["messages"][4]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_structured_output(gw: Stack, streamed: bool) -> None:
    """`Agent(output_type=Forecast)`: every model call asks the upstream for the model's strict
    JSON schema (`response_format`), tool turn included, and `final_output` is a `Forecast`."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Rome"}, "call_f1")]),
        Reply(content='{"city": "Rome", "temperature_c": 24, "conditions": "sunny"}'),
    )

    async def run() -> Any:
        async with agents_client(gw) as client:
            agent: Agent[Any] = Agent(
                name="forecaster",
                instructions="Give the forecast.",
                tools=[get_weather],
                output_type=Forecast,
                model=OpenAIResponsesModel(model="local-llama", openai_client=client),
            )
            if streamed:
                result = Runner.run_streamed(agent, "Forecast for Rome?")
                async for _ in result.stream_events():
                    pass
            else:
                result = await Runner.run(agent, "Forecast for Rome?")
            return result.final_output

    final = asyncio.run(run())
    assert isinstance(final, Forecast)
    assert final == Forecast(city="Rome", temperature_c=24, conditions="sunny")
    expected = {
        "type": "json_schema",
        "json_schema": {
            "name": "final_output",
            "schema": AgentOutputSchema(Forecast).json_schema(),
            "strict": True,
        },
    }
    assert expected["json_schema"]["schema"]["additionalProperties"] is False
    first, second = (recorded.body for recorded in gw.upstream.requests)
    assert first["response_format"] == expected
    assert second["response_format"] == expected
    assert paired_tool_calls(second["messages"]) == [("call_f1", "Sunny, 24 C in Rome")]


@pytest.mark.parametrize("chaining", ["auto_previous_response_id", "full_history"])
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_runs_parallel_tool_calls(gw: Stack, chaining: str, streamed: bool) -> None:
    """The model calls two tools at once (streamed, their argument pieces interleave): the SDK
    runs both and sends both outputs, and the upstream gets one assistant turn with both
    calls, each answered by its own output."""
    gw.upstream.enqueue(
        Reply(
            tool_calls=[
                tool_call("get_weather", {"city": "Paris"}, "call_p1"),
                tool_call("get_weather", {"city": "Oslo"}, "call_p2"),
            ]
        ),
        Reply(content="Sunny in both."),
    )

    async def run() -> Any:
        async with agents_client(gw) as client:
            agent = weather_agent(client)
            options = chaining_options(chaining)
            if not streamed:
                return await Runner.run(agent, "Paris and Oslo?", **options)
            result = Runner.run_streamed(agent, "Paris and Oslo?", **options)
            async for _ in result.stream_events():
                pass
            return result

    result = asyncio.run(run())
    assert result.final_output == "Sunny in both."
    calls = [item.raw_item.call_id for item in result.new_items if item.type == "tool_call_item"]
    assert calls == ["call_p1", "call_p2"]
    first, second = (recorded.body for recorded in gw.upstream.requests)
    assert first["messages"][-1] == {"role": "user", "content": "Paris and Oslo?"}
    assert [m["role"] for m in second["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert [call["id"] for call in second["messages"][2]["tool_calls"]] == ["call_p1", "call_p2"]
    assert paired_tool_calls(second["messages"]) == [
        ("call_p1", "Sunny, 24 C in Paris"),
        ("call_p2", "Sunny, 24 C in Oslo"),
    ]


def test_agent_tool_choice_required_and_no_parallel_calls(gw: Stack) -> None:
    """`ModelSettings(tool_choice="required")` on the agent and `parallel_tool_calls=False` from
    `RunConfig`: the upstream is told both; after the tool ran the SDK stops requiring a tool
    (`reset_tool_choice`) so the model can answer."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Kyiv"}, "call_r1")]),
        Reply(content="Sunny in Kyiv."),
    )

    async def run() -> Any:
        async with agents_client(gw) as client:
            agent: Agent[Any] = Agent(
                name="weather",
                instructions="Answer in one sentence.",
                tools=[get_weather],
                model=OpenAIResponsesModel(model="local-llama", openai_client=client),
                model_settings=ModelSettings(tool_choice="required"),
            )
            config = RunConfig(model_settings=ModelSettings(parallel_tool_calls=False))
            return await Runner.run(
                agent, "Weather in Kyiv?", run_config=config, auto_previous_response_id=True
            )

    result = asyncio.run(run())
    assert result.final_output == "Sunny in Kyiv."
    first, second = (recorded.body for recorded in gw.upstream.requests)
    assert first["tool_choice"] == "required"
    assert first["parallel_tool_calls"] is False and second["parallel_tool_calls"] is False
    assert second.get("tool_choice", "auto") == "auto"
    responses = [raw.response_id for raw in result.raw_responses]
    with gw.client() as client:
        stored = [client.responses.retrieve(response_id) for response_id in responses]
    assert [r.tool_choice for r in stored] == ["required", "auto"]
    assert [r.parallel_tool_calls for r in stored] == [False, False]


def test_agent_as_tool_of_another_agent(gw: Stack) -> None:
    """`agent.as_tool(…)`: the orchestrator's model calls the weather agent as a tool; that
    agent runs its own model calls (its own instructions and tool, no orchestrator history)
    and its answer comes back to the orchestrator as the tool's output."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("ask_weather", {"input": "Weather in Lima?"}, "call_o1")]),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Lima"}, "call_i1")]),
        Reply(content="Lima: sunny, 24 C."),
        Reply(content="The weather agent says Lima is sunny."),
    )

    async def run() -> Any:
        async with agents_client(gw) as client:
            orchestrator: Agent[Any] = Agent(
                name="orchestrator",
                instructions="Use your tools.",
                tools=[
                    weather_agent(client).as_tool(
                        tool_name="ask_weather", tool_description="Ask the weather agent."
                    )
                ],
                model=OpenAIResponsesModel(model="local-llama", openai_client=client),
            )
            return await Runner.run(orchestrator, "How is Lima?", auto_previous_response_id=True)

    result = asyncio.run(run())
    assert result.final_output == "The weather agent says Lima is sunny."
    outer, inner_call, inner_answer, outer_answer = (r.body for r in gw.upstream.requests)
    assert [tool["function"]["name"] for tool in outer["tools"]] == ["ask_weather"]
    assert inner_call["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Weather in Lima?"},
    ]
    assert [tool["function"]["name"] for tool in inner_call["tools"]] == ["get_weather"]
    assert paired_tool_calls(inner_answer["messages"]) == [("call_i1", "Sunny, 24 C in Lima")]
    assert outer_answer["messages"][0] == {"role": "system", "content": "Use your tools."}
    assert paired_tool_calls(outer_answer["messages"]) == [("call_o1", "Lima: sunny, 24 C.")]
    assert [m["role"] for m in outer_answer["messages"]] == ["system", "user", "assistant", "tool"]


def test_agent_unstored_run_resends_its_history(gw: Stack) -> None:
    """`ModelSettings(store=False)`: nothing to chain from, so the SDK resends the run's items,
    the gateway's own item ids included, and the gateway must take them as given."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Cairo"}, "call_u1")]),
        Reply(content="Sunny in Cairo."),
    )

    async def run() -> Any:
        async with agents_client(gw) as client:
            agent: Agent[Any] = Agent(
                name="weather",
                instructions="Answer in one sentence.",
                tools=[get_weather],
                model=OpenAIResponsesModel(model="local-llama", openai_client=client),
                model_settings=ModelSettings(store=False),
            )
            return await Runner.run(agent, "Weather in Cairo?")

    result = asyncio.run(run())
    assert result.final_output == "Sunny in Cairo."
    second = gw.upstream.last.body
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert paired_tool_calls(second["messages"]) == [("call_u1", "Sunny, 24 C in Cairo")]
    with gw.client() as client:
        for raw in result.raw_responses:
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(str(raw.response_id))
