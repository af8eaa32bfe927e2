"""The official `openai-agents` SDK as a client: an agent with a function tool on a Chat
Completions-backed model through the gateway, plain and streamed, chained by
`auto_previous_response_id` or kept in a conversation (`conversation_id`), and over one
WebSocket (`responses_websocket_session`). The fake upstream
calls the tool first, then answers with the tool's result."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    responses_websocket_session,
    set_tracing_disabled,
)
from agents.memory import (
    OpenAIConversationsSession,
    OpenAIResponsesCompactionSession,
    SQLiteSession,
)

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
