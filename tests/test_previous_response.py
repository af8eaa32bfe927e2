"""Multi-turn state kept by the gateway: previous_response_id chains, replayed and referenced
items, and what is (not) inherited."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.conftest import Stack, gateway_on, run_sql
from tests.fake_upstream import Reply
from tests.wire import strict_items


def user_texts(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages]


def test_multi_turn_conversation(client: openai.OpenAI, gw: Stack) -> None:
    first = client.responses.create(model="local-llama", input="one", instructions="Be brief.")
    second = client.responses.create(
        model="local-llama", input="two", previous_response_id=first.id
    )
    third = client.responses.create(
        model="local-llama", input="three", previous_response_id=second.id
    )
    assert third.previous_response_id == second.id
    # previous input + previous output + new input, in order; instructions are not inherited.
    assert gw.upstream.last.body["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"},
    ]
    assert third.instructions is None
    # Every turn is stored and retrievable later.
    for response in (first, second, third):
        assert client.responses.retrieve(response.id).output_text == response.output_text
    items = client.responses.input_items.list(third.id, order="asc")
    assert [item.type for item in items.data] == ["message"] * 5
    assert [item.role for item in items.data] == ["user", "assistant", "user", "assistant", "user"]
    assert items.data[1].id == first.output[0].id  # the stored output item, not a copy


def test_instructions_of_each_turn_apply_to_that_turn_only(
    client: openai.OpenAI, gw: Stack
) -> None:
    first = client.responses.create(model="local-llama", input="a", instructions="Old rules.")
    client.responses.create(
        model="local-llama", input="b", instructions="New rules.", previous_response_id=first.id
    )
    messages = gw.upstream.last.body["messages"]
    assert messages[0] == {"role": "system", "content": "New rules."}
    assert "Old rules." not in str(messages)


def test_unknown_previous_response(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="local-llama", input="x", previous_response_id="resp_nope")
    assert caught.value.body == {  # type: ignore[comparison-overlap]
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }


def test_deleted_previous_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model="local-llama", input="x")
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="local-llama", input="y", previous_response_id=first.id)
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_store_false_can_continue_a_stored_chain(client: openai.OpenAI, gw: Stack) -> None:
    first = client.responses.create(model="local-llama", input="stored")
    second = client.responses.create(
        model="local-llama", input="ephemeral", previous_response_id=first.id, store=False
    )
    assert second.output_text == "echo: ephemeral"
    assert len(gw.upstream.last.body["messages"]) == 3
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)


def test_replayed_items_with_client_ids_are_stored_once(client: openai.OpenAI, gw: Stack) -> None:
    """Codex-style: the whole history each call, with ids the client made up or got from us."""
    user_id = f"msg_{uuid.uuid4()}"
    first = client.responses.create(
        model="local-llama",
        input=[{"type": "message", "id": user_id, "role": "user", "content": "hi"}],
    )
    replay = [
        {"type": "message", "id": user_id, "role": "user", "content": "hi"},
        first.output[0].model_dump(exclude_none=True),
        {"type": "message", "id": f"msg_{uuid.uuid4()}", "role": "user", "content": "more"},
    ]
    second = client.responses.create(model="local-llama", input=replay)
    third = client.responses.create(model="local-llama", input=replay)  # the very same ids again
    assert third.status == "completed"
    assert gw.upstream.last.body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "echo: hi"},
        {"role": "user", "content": "more"},
    ]
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [item.id for item in listed] == [user_id, first.output[0].id, replay[2]["id"]]
    # Deleting the first response removes the items it created, not the later responses.
    client.responses.delete(first.id)
    assert client.responses.retrieve(third.id).output_text == "echo: more"


def test_same_id_with_different_content_is_not_confused(client: openai.OpenAI, gw: Stack) -> None:
    shared = f"msg_{uuid.uuid4()}"
    client.responses.create(
        model="local-llama", input=[{"id": shared, "role": "user", "content": "first text"}]
    )
    second = client.responses.create(
        model="local-llama", input=[{"id": shared, "role": "user", "content": "second text"}]
    )
    assert second.output_text == "echo: second text"
    listed = client.responses.input_items.list(second.id).data
    assert listed[0].content[0].text == "second text"  # type: ignore[union-attr]


def test_item_reference_resolves_a_stored_item(client: openai.OpenAI, gw: Stack) -> None:
    first = client.responses.create(model="local-llama", input="remember me")
    stored_user_item = client.responses.input_items.list(first.id).data[0]
    client.responses.create(
        model="local-llama",
        input=[
            {"type": "item_reference", "id": stored_user_item.id},
            {"id": first.output[0].id},  # `type` may be omitted
            {"role": "user", "content": "what did I say?"},
        ],
    )
    assert gw.upstream.last.body["messages"] == [
        {"role": "user", "content": "remember me"},
        {"role": "assistant", "content": "echo: remember me"},
        {"role": "user", "content": "what did I say?"},
    ]
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="local-llama", input=[{"type": "item_reference", "id": "x"}])
    assert caught.value.body["param"] == "input[0].id"  # type: ignore[index]


def test_function_call_items_can_be_replayed(client: openai.OpenAI, gw: Stack) -> None:
    client.responses.create(
        model="local-llama",
        input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        ],
        tools=[{"type": "function", "name": "w", "parameters": {"type": "object"}}],
    )
    messages = gw.upstream.last.body["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "w", "arguments": "{}"}
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "rain"}


def test_input_items_are_sdk_typed_resources(client: openai.OpenAI, gw: Stack) -> None:
    first = client.responses.create(
        model="local-llama",
        input=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ],
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    )
    raw = client.responses.input_items.with_raw_response.list(first.id)
    body = raw.http_response.json()
    assert set(body) == {"object", "data", "first_id", "last_id", "has_more"}
    strict_items(body["data"])
    assert all(item["id"] for item in body["data"])


def test_deleting_a_turn_in_the_middle_of_a_chain(client: openai.OpenAI, gw: Stack) -> None:
    first = client.responses.create(model="local-llama", input="one")
    second = client.responses.create(
        model="local-llama", input="two", previous_response_id=first.id
    )
    third = client.responses.create(
        model="local-llama", input="three", previous_response_id=second.id
    )
    client.responses.delete(second.id)
    # The later turn still continues; its context just lacks the deleted turn's items.
    fourth = client.responses.create(
        model="local-llama", input="four", previous_response_id=third.id
    )
    assert fourth.status == "completed"
    assert user_texts(gw.upstream.last.body["messages"]) == [
        "one",
        "echo: one",
        "three",
        "echo: three",
        "four",
    ]
    listed = client.responses.input_items.list(fourth.id, limit=2)  # desc: newest first
    texts = [item.content[0].text for item in listed.data]  # type: ignore[union-attr]
    assert texts == ["four", "echo: three"] and listed.has_more
    rest = client.responses.input_items.list(fourth.id, limit=2, after=listed.last_id)
    texts = [item.content[0].text for item in rest.data]  # type: ignore[union-attr]
    assert texts == ["three", "echo: one"] and rest.has_more
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="local-llama", input="x", previous_response_id=second.id)


def walk(pages: object, cap: int = 50) -> list[str]:
    """The ids the SDK's auto-pagination yields, stopped after `cap` (a loop would never end)."""
    return [item.id for item in itertools.islice(pages, cap)]  # type: ignore[call-overload]


def test_replaying_items_of_the_previous_turn_is_refused(client: openai.OpenAI, gw: Stack) -> None:
    """As OpenAI does: with `previous_response_id` the previous turns are already the context,
    so an input item repeating one of them (replayed with its id, or an item_reference), or
    repeating another input item, is a 400 before any upstream call."""
    first = client.responses.create(model="local-llama", input="one")
    (user,) = client.responses.input_items.list(first.id).data
    replayed = first.output[0].model_dump(exclude_none=True)
    fresh = {"type": "message", "id": f"msg_{uuid.uuid4()}", "role": "user", "content": "x"}
    calls = len(gw.upstream.requests)
    for previous, items, duplicate in (
        (first.id, [replayed, {"role": "user", "content": "two"}], first.output[0].id),
        (first.id, [{"type": "item_reference", "id": user.id}], user.id),
        (None, [fresh, fresh], fresh["id"]),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(
                model="local-llama",
                input=items,  # type: ignore[arg-type]
                previous_response_id=previous,
            )
        assert caught.value.body == {  # type: ignore[comparison-overlap]
            "message": f"Duplicate item found with id {duplicate}. Remove duplicate items from "
            "your input and try again.",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        }
    assert len(gw.upstream.requests) == calls


def test_input_items_pages_list_each_item_once(client: openai.OpenAI, gw: Stack) -> None:
    """`after` pagination is exact, also over a context an older version stored with an item
    twice (the previous turn replayed with `previous_response_id`): each id is listed once, at
    its first place, so the SDK's auto-pagination neither repeats nor loops."""
    first = client.responses.create(model="local-llama", input="one")
    second = client.responses.create(
        model="local-llama", input="two", previous_response_id=first.id
    )
    third = client.responses.create(
        model="local-llama", input="three", previous_response_id=second.id
    )
    expected = [item.id for item in client.responses.input_items.list(third.id, order="asc")]
    assert len(expected) == 5 == len(set(expected))
    for limit in (1, 2, 100):
        assert walk(client.responses.input_items.list(third.id, order="asc", limit=limit)) == (
            expected
        )
        assert walk(client.responses.input_items.list(third.id, limit=limit)) == expected[::-1]
    # As stored before such input was refused: turn 2's input repeats turn 1's output.
    ((history, inputs),) = run_sql(
        gw.database, f"SELECT history_pks, input_pks FROM responses WHERE id = '{second.id}'"
    )
    repeated = json.dumps([json.loads(history)[-1], *json.loads(inputs)])
    run_sql(gw.database, f"UPDATE responses SET input_pks = '{repeated}' WHERE id = '{second.id}'")
    listed = [item.id for item in client.responses.input_items.list(second.id, order="asc")]
    assert listed == expected[:3]
    for limit in (1, 2):
        for order, ids in (("asc", expected[:3]), ("desc", expected[:3][::-1])):
            pages = client.responses.input_items.list(second.id, order=order, limit=limit)  # type: ignore[arg-type]
            assert walk(pages) == ids, (order, limit)


@pytest.mark.parametrize("cache_items", [0, 5])
def test_chains_are_right_whatever_the_context_cache_holds(
    gw: Stack, tmp_path: Path, cache_items: int
) -> None:
    """GATEWAY_CONTEXT_CACHE_ITEMS bounds the per-process context cache (0: off). Two chains
    interleaved through a gateway whose cache holds none, or only a few items (so entries are
    evicted, and contexts past the bound are never cached): every turn still sends its whole
    context upstream, loaded from the database where the cache has nothing."""
    with gateway_on(
        gw.database.url, gw.upstream, tmp_path, gateway_context_cache_items=cache_items
    ) as server:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            last: dict[str, str | None] = {"a": None, "b": None}
            for turn in range(4):
                for chain in ("a", "b"):
                    response = client.responses.create(
                        model="local-llama",
                        input=f"{chain}{turn}",
                        previous_response_id=last[chain],
                    )
                    last[chain] = response.id
                    expected = []
                    for earlier in range(turn):
                        expected += [f"{chain}{earlier}", f"echo: {chain}{earlier}"]
                    assert user_texts(gw.upstream.last.body["messages"]) == [
                        *expected,
                        f"{chain}{turn}",
                    ]


def test_a_turn_deleted_during_a_generation_stays_out_of_later_turns(
    gw: Stack, client: openai.OpenAI
) -> None:
    """Turn 3 loads its context (turns 1–2), then turn 1 is deleted while turn 3 is still
    generating. Turn 3 is stored with the context it was made from, but the items it read
    before the delete must not come back through the context cache: a continuation of turn 3
    sends turn 2, turn 3 and itself — never the deleted turn — right after the delete, with no
    wait for a notification."""
    first = client.responses.create(model="local-llama", input="one")
    second = client.responses.create(
        model="local-llama", input="two", previous_response_id=first.id
    )
    gw.upstream.enqueue(Reply(content="slow three", delay=1.0))
    with ThreadPoolExecutor(max_workers=1) as pool:
        third_call = pool.submit(
            client.responses.create,
            model="local-llama",
            input="three",
            previous_response_id=second.id,
        )
        time.sleep(0.4)  # turn 3 has read its context and waits for the upstream
        client.responses.delete(first.id)
        third = third_call.result()
    client.responses.create(model="local-llama", input="four", previous_response_id=third.id)
    assert user_texts(gw.upstream.last.body["messages"]) == [
        "two",
        "echo: two",
        "three",
        "slow three",
        "four",
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_a_previous_response_deleted_behind_the_cache_is_not_found(
    gw: Stack, client: openai.OpenAI, stream: bool
) -> None:
    """A response removed where this gateway hears of it late (on another replica whose
    notification has not arrived, or was lost; here a statement straight on the database) is
    still in this gateway's context cache. A continuation is a 404
    `previous_response_not_found` all the same, and stores nothing: a plain create checks
    while the upstream answers, a stream before its first byte. The stale entry is dropped,
    so the next try is a 404 from the database."""
    first = client.responses.create(model="local-llama", input="one")
    run_sql(gw.database, f"DELETE FROM responses WHERE id = '{first.id}'")
    for _ in range(2):
        with pytest.raises(openai.NotFoundError) as caught:
            client.responses.create(
                model="local-llama", input="two", previous_response_id=first.id, stream=stream
            )
        assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    query = f"SELECT count(*) FROM responses WHERE previous_response_id = '{first.id}'"
    assert run_sql(gw.database, query) == [(0,)]
