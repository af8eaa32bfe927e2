"""WebSocket mode (`/v1/responses` over a WebSocket), driven by the openai SDK's own client
(`client.responses.connect()`): the same events as an HTTP stream, `store: false`
continuation from the connection's memory, lanes (`stream_id`), `generate: false`, error
events that keep the connection open, the handshake's 401, the connection's time limit and a
client that goes away mid-answer."""

from __future__ import annotations

import json
import socket as pysocket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import websockets.sync.client
from openai.types.responses.responses_server_event import ResponsesServerEvent, ResponseWsError
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Stack, gateway_on, migrate, new_database, run_sql
from tests.fake_upstream import Fail, Reply
from tests.schemas import (
    SDK_ONLY_EVENTS,
    check_event_schemas,
    open_responses,
    openai_components,
)
from tests.tenancy import CACHE_SECONDS, Tenants, tenants, tenants_stack  # noqa: F401 (fixtures)

ENDING = {"response.completed", "response.failed", "response.incomplete"}
SERVER_EVENT = TypeAdapter(ResponsesServerEvent)


def receive(connection: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(connection.recv_bytes())
    SERVER_EVENT.validate_python(event)  # the SDK's strict parse of a server event
    kind = event["type"]
    if not kind.startswith("response.steer.") and kind not in SDK_ONLY_EVENTS:  # newer than it
        openai_components().check("ResponsesServerEvent", event)  # lanes' stream_id included
    return event


def answer(connection: Any) -> list[dict[str, Any]]:
    """The events of one response (or its one error event), checked against the schemas."""
    events: list[dict[str, Any]] = []
    while True:
        event = receive(connection)
        events.append(event)
        if event["type"] == "error" and "status" in event:
            check_error_event(event)
            return events
        if event["type"] in ENDING:
            check_event_schemas([strip_lane(e) for e in events])
            return events


def strip_lane(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != "stream_id"}


def check_error_event(event: dict[str, Any]) -> None:
    ResponseWsError.model_validate(event)
    openai_components().check("ResponseWsError", event)
    open_responses().check("WebSocketErrorEvent", strip_lane(event))
    assert set(event["error"]) >= {"type", "code", "message", "param"}


def turn(connection: Any, **create: Any) -> list[dict[str, Any]]:
    connection.response.create(**create)
    return answer(connection)


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["type"] in ENDING, events[-1]
    response: dict[str, Any] = events[-1]["response"]
    return response


def text_of(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


@pytest.fixture
def connection(client: openai.OpenAI) -> Iterator[Any]:
    with client.responses.connect() as opened:
        yield opened


def test_a_turn_streams_the_http_events_and_is_stored(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="Hello over a socket"))
    events = turn(connection, model="local-llama", input="hi", instructions="Be brief.")
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert all("stream_id" not in event for event in events)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    response = final(events)
    assert text_of(response) == "Hello over a socket"
    sent = gw.upstream.last.body
    assert sent["stream"] is True and sent["messages"][-1]["content"] == "hi"
    # Stored like any create (store defaults to true): retrievable over HTTP.
    stored = client.responses.retrieve(response["id"])
    assert stored.status == "completed" and stored.output_text == "Hello over a socket"


def test_store_false_turns_continue_from_the_connection(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="first answer"), Reply(content="second answer"))
    first = final(turn(connection, model="local-llama", input="one", store=False))
    second = final(
        turn(
            connection,
            model="local-llama",
            input="two",
            store=False,
            previous_response_id=first["id"],
        )
    )
    assert text_of(second) == "second answer" and second["previous_response_id"] == first["id"]
    messages = gw.upstream.requests[1].body["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "one"),
        ("assistant", "first answer"),
        ("user", "two"),
    ]
    # Never stored: not found over HTTP, nor on another connection.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first["id"])
    with client.responses.connect() as other:
        [error] = turn(other, model="local-llama", input="x", previous_response_id=second["id"])
    assert error["status"] == 404
    assert error["error"]["code"] == "previous_response_not_found"
    assert error["error"]["param"] == "previous_response_id"


def test_a_stored_turn_can_continue_from_an_unstored_one(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="kept in memory"), Reply(content="stored now"))
    first = final(turn(connection, model="local-llama", input="remember 7", store=False))
    second = final(
        turn(connection, model="local-llama", input="what?", previous_response_id=first["id"])
    )
    items = client.responses.input_items.list(second["id"], order="asc").data
    texts = [getattr(item, "content", [None])[0] for item in items]
    assert [getattr(t, "text", None) for t in texts] == ["remember 7", "kept in memory", "what?"]
    # Its chain goes on over HTTP, from what it was stored with.
    gw.upstream.enqueue(Reply(content="third"))
    client.responses.create(model="local-llama", input="and?", previous_response_id=second["id"])
    contents = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert contents == ["remember 7", "kept in memory", "what?", "stored now", "and?"]


def test_a_failed_continuation_evicts_what_it_continued_from(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(Reply(content="base"), Fail(500, {"error": {"message": "boom"}}))
    base = final(turn(connection, model="local-llama", input="one", store=False))
    failed = final(
        turn(
            connection,
            model="local-llama",
            input="two",
            store=False,
            previous_response_id=base["id"],
        )
    )
    assert failed["status"] == "failed"
    [error] = turn(
        connection, model="local-llama", input="three", store=False, previous_response_id=base["id"]
    )
    assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"


def test_a_refused_continuation_evicts_too(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(Reply(content="base"))
    base = final(turn(connection, model="local-llama", input="one", store=False))
    [refused] = turn(
        connection, model="no-such-model", input="two", store=False, previous_response_id=base["id"]
    )
    assert refused["status"] == 404 and refused["error"]["param"] == "model"
    [error] = turn(
        connection, model="local-llama", input="three", store=False, previous_response_id=base["id"]
    )
    assert error["error"]["code"] == "previous_response_not_found"


@pytest.mark.parametrize(
    ("frame", "status", "param", "code"),
    [
        ("{not json", 400, None, "invalid_request_error"),
        ("[1, 2]", 400, None, "invalid_type"),
        ('{"model": "local-llama", "input": "hi"}', 400, "type", "missing_required_parameter"),
        ('{"type": "response.cancel"}', 400, "type", "invalid_value"),
        ('{"type": "response.create", "input": "hi"}', 400, "model", "missing_required_parameter"),
        (
            '{"type": "response.create", "model": "local-llama", "input": "hi", "temperature": 9}',
            400,
            "temperature",
            "decimal_above_max_value",
        ),
        (
            '{"type": "response.create", "model": "local-llama", "input": "x", "background": true}',
            400,
            "background",
            "unsupported_parameter",
        ),
        (
            '{"type": "response.create", "model": "local-llama", "input": "x", "stream_id": "a b"}',
            400,
            "stream_id",
            "invalid_value",
        ),
        (
            '{"type": "response.create", "model": "local-llama", "input": "hi", "generate": "no"}',
            400,
            "generate",
            "invalid_type",
        ),
        (
            '{"type": "response.create", "model": "nope", "input": "hi"}',
            404,
            "model",
            "model_not_found",
        ),
        (
            '{"type": "response.create", "model": "local-llama", "generate": false, "input": '
            '[{"role": "user", "content": "hi"}, {"type": "compaction_trigger"}]}',
            400,
            "generate",
            "invalid_value",
        ),
    ],
)
def test_bad_events_get_an_error_event_and_the_connection_stays_open(
    gw: Stack, connection: Any, frame: str, status: int, param: str | None, code: str
) -> None:
    connection.send_raw(frame)
    [error] = answer(connection)
    assert error["status"] == status, error
    assert error["error"]["param"] == param and error["error"]["code"] == code
    assert gw.upstream.requests == []
    gw.upstream.enqueue(Reply(content="still here"))
    assert text_of(final(turn(connection, model="local-llama", input="hi"))) == "still here"


def test_generate_false_prepares_state_without_calling_the_model(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    warm = turn(
        connection,
        model="local-llama",
        input=[{"role": "user", "content": "context to keep"}],
        instructions="Answer in French.",
        generate=False,
    )
    assert [event["type"] for event in warm] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    prepared = final(warm)
    assert prepared["output"] == [] and prepared["usage"]["total_tokens"] == 0
    assert gw.upstream.requests == []
    assert client.responses.retrieve(prepared["id"]).status == "completed"
    gw.upstream.enqueue(Reply(content="Bonjour"))
    answered = final(
        turn(
            connection,
            model="local-llama",
            input="go",
            instructions="Answer in French.",
            previous_response_id=prepared["id"],
        )
    )
    assert text_of(answered) == "Bonjour"
    messages = gw.upstream.last.body["messages"]
    assert [m["content"] for m in messages] == ["Answer in French.", "context to keep", "go"]


def test_lanes_run_side_by_side_and_echo_their_stream_id(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(
        Reply(content="slow " * 20, token_delay=0.05), Reply(content="quick answer")
    )
    connection.response.create(model="local-llama", input="slow one", stream_id="lane.a")
    time.sleep(0.2)  # lane.a's generation is under way
    connection.response.create(model="local-llama", input="quick one", stream_id="lane-b_2")
    events: list[dict[str, Any]] = []
    while sum(e["type"] == "response.completed" for e in events) < 2:
        events.append(receive(connection))
    done = [e for e in events if e["type"] == "response.completed"]
    assert [e["stream_id"] for e in done] == ["lane-b_2", "lane.a"]  # the quick one first
    by_lane: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_lane.setdefault(event["stream_id"], []).append(event)
    for lane_events in by_lane.values():
        check_event_schemas([strip_lane(e) for e in lane_events])
        assert lane_events[-1]["type"] == "response.completed"


def test_one_lane_answers_in_the_order_sent(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(Reply(content="A " * 10, token_delay=0.02), Reply(content="B"))
    connection.response.create(model="local-llama", input="first")
    connection.response.create(model="local-llama", input="second")
    first, second = answer(connection), answer(connection)
    assert text_of(final(first)).strip().startswith("A") and text_of(final(second)) == "B"
    assert [r.body["messages"][-1]["content"] for r in gw.upstream.requests] == [
        "first",
        "second",
    ]


def test_the_stream_limit_is_an_error_on_the_new_lane(upstream: Any, tmp_path: Path) -> None:
    upstream.reset()
    for database in new_database("sqlite", tmp_path):
        migrate(database.url)
        with gateway_on(database.url, upstream, tmp_path, gateway_websocket_max_streams=1) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-x", max_retries=0)
            upstream.enqueue(Reply(content="busy " * 10, token_delay=0.05), Reply(content="ok"))
            with client.responses.connect() as connection:
                connection.response.create(model="local-llama", input="one", stream_id="a")
                time.sleep(0.2)
                connection.response.create(model="local-llama", input="two", stream_id="b")
                events: list[dict[str, Any]] = []
                while not events or events[-1]["type"] != "response.completed":
                    events.append(receive(connection))
                [error] = [e for e in events if e["type"] == "error"]
                check_error_event(error)
                assert error["stream_id"] == "b" and error["status"] == 400
                assert error["error"]["code"] == "websocket_stream_limit_reached"
                # Once lane a is idle, another lane may start.
                done = final(turn(connection, model="local-llama", input="three", stream_id="b"))
                assert text_of(done) == "ok"


def test_the_connection_time_limit_closes_it_with_an_error(upstream: Any, tmp_path: Path) -> None:
    """At the limit, what the connection already took still runs; a request after it gets
    the limit's error in its turn; then the final error and a close the SDK reconnects on."""
    upstream.reset()
    for database in new_database("sqlite", tmp_path):
        migrate(database.url)
        with gateway_on(database.url, upstream, tmp_path, gateway_websocket_max_seconds=1) as gw:
            url = gw.url.replace("http://", "ws://") + "/v1/responses"
            upstream.enqueue(Reply(content="word " * 60, token_delay=0.05), Reply(content="B"))
            with websockets.sync.client.connect(url) as socket:
                create = {"type": "response.create", "model": "local-llama"}
                socket.send(json.dumps({**create, "input": "running at the limit"}))
                socket.send(json.dumps({**create, "input": "queued before it"}))
                time.sleep(1.2)  # the limit passes while the first one runs
                socket.send(json.dumps({**create, "input": "sent after it"}))
                events = []
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        events.append(json.loads(socket.recv(timeout=10)))
            kinds = [event["type"] for event in events]
            assert kinds.count("response.completed") == 2  # both taken before the limit
            errors = [event for event in events if event["type"] == "error"]
            assert len(errors) == 2 and kinds[-2:] == ["error", "error"]
            for error in errors:
                check_error_event(error)
                assert error["error"]["code"] == "websocket_connection_limit_reached"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert len(upstream.requests) == 2


def test_a_client_gone_mid_answer_leaves_it_stored_cancelled(
    gw: Stack, client: openai.OpenAI
) -> None:
    gw.upstream.enqueue(Reply(content="word " * 200, token_delay=0.02))
    url = gw.gateway.url.replace("http://", "ws://") + "/v1/responses"
    socket = websockets.sync.client.connect(url)
    socket.send(json.dumps({"type": "response.create", "model": "local-llama", "input": "hi"}))
    created = json.loads(socket.recv(timeout=5))
    while json.loads(socket.recv(timeout=5))["type"] != "response.output_text.delta":
        pass
    # Gone without a goodbye (a killed process, a dropped network): no close handshake.
    socket.socket.shutdown(pysocket.SHUT_RDWR)
    socket.socket.close()
    response_id = created["response"]["id"]
    deadline = time.monotonic() + 20
    while True:  # stored when the generation ends: here, once the server sees the close
        try:
            stored = client.responses.retrieve(response_id)
            break
        except openai.NotFoundError:
            assert time.monotonic() < deadline, "the response was never stored"
            time.sleep(0.05)
    assert stored.status == "cancelled" and "word" in stored.output_text
    assert len(gw.upstream.requests) == 1


def test_steering_is_refused_with_its_own_event(gw: Stack, connection: Any) -> None:
    connection.response.steer(input="faster", previous_response_id="resp_x")
    event = receive(connection)
    assert event["type"] == "response.steer.failed" and "stream_id" not in event
    assert event["error"]["code"] == "steering_not_supported"
    assert event["steer"] == {"input": "faster", "previous_response_id": "resp_x"}
    # About a response running on a lane: the refusal comes on that lane.
    gw.upstream.enqueue(Reply(content="busy " * 20, token_delay=0.03))
    connection.response.create(model="local-llama", input="go", stream_id="main")
    running = receive(connection)["response"]["id"]
    connection.response.steer(input="stop", previous_response_id=running)
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "response.completed":
        events.append(receive(connection))
    [refused] = [e for e in events if e["type"] == "response.steer.failed"]
    assert refused["stream_id"] == "main" and refused["steer"]["previous_response_id"] == running


def test_a_bad_key_is_refused_at_the_handshake(tenants: Tenants) -> None:  # noqa: F811
    url = tenants.gateway.url.replace("http://", "ws://") + "/v1/responses"
    with pytest.raises(InvalidStatus) as refused:
        websockets.sync.client.connect(url, additional_headers={"authorization": "Bearer sk-bad"})
    answer_ = refused.value.response
    assert answer_.status_code == 401
    body = json.loads(answer_.body)
    assert body["error"]["code"] == "invalid_api_key" and set(body["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    # A good key connects, and its responses belong to its project.
    tenants.upstream.enqueue(Reply(content="alpha's"))
    with tenants.client(tenants.a).responses.connect() as connection:
        done = final(turn(connection, model="local-llama", input="hi"))
    assert tenants.client(tenants.a).responses.retrieve(done["id"]).status == "completed"
    with pytest.raises(openai.NotFoundError):
        tenants.client(tenants.b).responses.retrieve(done["id"])


def test_a_rate_limited_request_is_a_429_event_with_its_headers(tenants: Tenants) -> None:  # noqa: F811
    key = tenants.new_key("ws-limited", rpm=1)
    tenants.upstream.enqueue(Reply(content="the one allowed"))
    with tenants.client(key).responses.connect() as connection:
        assert text_of(final(turn(connection, model="local-llama", input="a"))) == "the one allowed"
        [limited] = turn(connection, model="local-llama", input="b")
    assert limited["status"] == 429 and limited["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in {name.lower() for name in limited["error"]["headers"]}
    assert len(tenants.upstream.requests) == 1


def test_a_refusal_keeps_its_place_among_its_lanes_answers(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(Reply(content="A " * 10, token_delay=0.02), Reply(content="C"))
    connection.response.create(model="local-llama", input="first")
    connection.response.create(model="local-llama", input="second", temperature=9)
    connection.response.create(model="local-llama", input="third")
    first, refused, third = answer(connection), answer(connection), answer(connection)
    assert final(first)["status"] == "completed"
    assert [e["type"] for e in refused] == ["error"] and refused[0]["error"][
        "param"
    ] == "temperature"
    assert text_of(final(third)) == "C"


def test_a_refused_frame_evicts_what_it_continued_from(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(Reply(content="base"))
    base = final(turn(connection, model="local-llama", input="one", store=False))
    [refused] = turn(
        connection,
        model="local-llama",
        input="two",
        store=False,
        previous_response_id=base["id"],
        temperature=9,
    )
    assert refused["status"] == 400
    [error] = turn(connection, model="local-llama", input="3", previous_response_id=base["id"])
    assert error["error"]["code"] == "previous_response_not_found"


def test_more_than_64_waiting_requests_are_refused_and_the_rest_answered(
    gw: Stack, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="slow " * 40, token_delay=0.05))
    for n in range(70):
        connection.response.create(model="local-llama", input=f"request {n}")
    events: list[dict[str, Any]] = []
    while sum(e["type"] in ("response.completed", "error") for e in events) < 70:
        events.append(receive(connection))
    refused = [e for e in events if e["type"] == "error"]
    assert len(refused) == 6
    assert all(e["error"]["code"] == "websocket_stream_limit_reached" for e in refused)
    assert sum(e["type"] == "response.completed" for e in events) == 64
    assert len(gw.upstream.requests) == 64


def test_a_stored_ancestor_deleted_ends_its_unstored_descendants(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="stored root"), Reply(content="unstored child"))
    root = final(turn(connection, model="local-llama", input="root"))
    child = final(
        turn(
            connection,
            model="local-llama",
            input="child",
            store=False,
            previous_response_id=root["id"],
        )
    )
    client.responses.delete(root["id"])
    [error] = turn(connection, model="local-llama", input="x", previous_response_id=child["id"])
    assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"


def test_a_stored_turn_on_an_unstored_one_refers_to_the_stored_items(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="root"), Reply(content="child"), Reply(content="grand"))
    root = final(turn(connection, model="local-llama", input="r"))
    child = final(
        turn(
            connection, model="local-llama", input="c", store=False, previous_response_id=root["id"]
        )
    )
    grand = final(
        turn(connection, model="local-llama", input="g", previous_response_id=child["id"])
    )
    contents = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert contents == ["r", "root", "c", "child", "g"]
    root_message = root["output"][0]["id"]
    rows = run_sql(gw.database, f"SELECT response_id FROM items WHERE id = '{root_message}'")
    assert rows == [(root["id"],)]  # referred to by the grandchild, not stored again
    items = client.responses.input_items.list(grand["id"], order="asc").data
    assert len(items) == 5 and items[1].id == root_message


def test_an_oversized_frame_is_a_413_event(upstream: Any, tmp_path: Path) -> None:
    upstream.reset()
    for database in new_database("sqlite", tmp_path):
        migrate(database.url)
        with gateway_on(database.url, upstream, tmp_path, gateway_max_body_bytes=10_000) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-x", max_retries=0)
            with client.responses.connect() as connection:
                for text in ("x" * 12_000, "é" * 6_000):  # 12 KB each; the second 6,000 chars
                    create = {"type": "response.create", "model": "local-llama", "input": text}
                    connection.send_raw(json.dumps(create, ensure_ascii=False))
                    [error] = answer(connection)
                    assert error["status"] == 413, error
                    assert error["error"]["code"] == "request_too_large"
                upstream.enqueue(Reply(content="fits"))
                assert text_of(final(turn(connection, model="local-llama", input="ok"))) == "fits"


def test_a_key_revoked_while_connected_stops_the_connection(tenants: Tenants) -> None:  # noqa: F811
    created = tenants.admin("POST", "/admin/keys", json={"project": "ws-revoked"}).json()
    tenants.upstream.enqueue(Reply(content="before"))
    with tenants.client(created["key"]).responses.connect() as connection:
        assert text_of(final(turn(connection, model="local-llama", input="a"))) == "before"
        assert tenants.admin("DELETE", f"/admin/keys/{created['id']}").status_code == 200
        time.sleep(CACHE_SECONDS + 0.2)  # what each replica may trust a lookup for
        [refused] = turn(connection, model="local-llama", input="b")
        assert refused["status"] == 401 and refused["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv_bytes()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert len(tenants.upstream.requests) == 1


def test_refusals_evict_in_their_lanes_order(gw: Stack, connection: Any) -> None:
    gw.upstream.enqueue(Reply(content="base"), Reply(content="busy " * 10, token_delay=0.03))
    base = final(turn(connection, model="local-llama", input="b", store=False))
    connection.response.create(model="local-llama", input="busy", store=False)
    connection.response.create(
        model="local-llama", input="valid", store=False, previous_response_id=base["id"]
    )
    connection.response.create(
        model="local-llama", input="bad", previous_response_id=base["id"], temperature=9
    )
    busy, valid, refused = answer(connection), answer(connection), answer(connection)
    assert final(busy)["status"] == "completed"
    assert final(valid)["status"] == "completed"  # taken before the refusal evicted `base`
    assert refused[0]["status"] == 400
    [error] = turn(connection, model="local-llama", input="x", previous_response_id=base["id"])
    assert error["error"]["code"] == "previous_response_not_found"


def test_a_refused_continuation_of_a_running_response_on_another_lane(
    gw: Stack, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="long " * 20, token_delay=0.03))
    connection.response.create(model="local-llama", input="a", store=False, stream_id="a")
    running = receive(connection)["response"]["id"]  # response.created
    connection.response.create(
        model="local-llama", input="b", stream_id="b", previous_response_id=running, temperature=9
    )
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "response.completed":
        events.append(receive(connection))
    assert [e["stream_id"] for e in events if e["type"] == "error"] == ["b"]
    [error] = turn(connection, model="local-llama", input="c", previous_response_id=running)
    assert error["error"]["code"] == "previous_response_not_found"  # never remembered


def test_items_deleted_with_a_deeper_ancestor_leave_the_remembered_context(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="one"), Reply(content="two"), Reply(content="three"))
    first = final(turn(connection, model="local-llama", input="r1"))
    second = final(
        turn(connection, model="local-llama", input="r2", previous_response_id=first["id"])
    )
    unstored = final(
        turn(
            connection,
            model="local-llama",
            input="u",
            store=False,
            previous_response_id=second["id"],
        )
    )
    client.responses.delete(first["id"])  # its items go with it, from every chain
    gw.upstream.enqueue(Reply(content="over http"), Reply(content="over the socket"))
    client.responses.create(model="local-llama", input="h", previous_response_id=second["id"])
    over_http = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert over_http == ["r2", "two", "h"]
    turn(connection, model="local-llama", input="w", previous_response_id=unstored["id"])
    over_socket = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert over_socket == ["r2", "two", "u", "three", "w"]


def test_an_unstored_compaction_ends_with_its_stored_root(
    gw: Stack, client: openai.OpenAI, connection: Any
) -> None:
    gw.upstream.enqueue(Reply(content="root answer"), Reply(content="The summary."))
    root = final(turn(connection, model="local-llama", input="root"))
    compacted = final(
        turn(
            connection,
            model="local-llama",
            input=[{"role": "user", "content": "more"}, {"type": "compaction_trigger"}],
            store=False,
            previous_response_id=root["id"],
        )
    )
    assert [item["type"] for item in compacted["output"]] == ["compaction"]
    client.responses.delete(root["id"])
    [error] = turn(connection, model="local-llama", input="x", previous_response_id=compacted["id"])
    assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"


def test_server_side_compaction_over_the_socket(gw: Stack, connection: Any) -> None:
    long = "Plan the trip: " + "Lisbon, Porto and Faro, " * 600
    gw.upstream.enqueue(Reply(content="Summary: a trip to three cities."), Reply(content="Done."))
    compacting = [{"type": "compaction", "compact_threshold": 1000}]
    first = final(
        turn(
            connection,
            model="local-llama",
            input=long,
            store=False,
            context_management=compacting,
        )
    )
    assert [item["type"] for item in first["output"]] == ["compaction", "message"]
    gw.upstream.enqueue(Reply(content="Porto first."))
    turn(
        connection,
        model="local-llama",
        input="Which first?",
        store=False,
        previous_response_id=first["id"],
        context_management=compacting,
    )
    sent = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert sent[0].endswith("Summary: a trip to three cities.")
    assert sent[1:] == ["Done.", "Which first?"] and len(gw.upstream.requests) == 3
