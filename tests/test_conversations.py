"""The Conversations API and responses created in a conversation, through the official SDK."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import openai
import pytest
from openai.types.conversations import Conversation, ConversationItemList

from tests.conftest import Stack
from tests.wire import strict_response


def raw_json(response: object) -> dict:
    return response.http_response.json()  # type: ignore[attr-defined]


def test_conversation_crud(client: openai.OpenAI) -> None:
    created = raw_json(
        client.conversations.with_raw_response.create(
            metadata={"topic": "demo"},
            items=[{"type": "message", "role": "user", "content": "Hello!"}],
        )
    )
    conversation = Conversation.model_validate(created)
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"}
    assert client.conversations.retrieve(conversation.id).model_dump() == conversation.model_dump()
    updated = client.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    cleared = client.conversations.update(conversation.id, metadata=None)
    assert cleared.metadata == {} and client.conversations.retrieve(conversation.id).metadata == {}
    client.conversations.update(conversation.id, metadata={"topic": "changed"})
    deleted = client.conversations.delete(conversation.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (
        conversation.id,
        "conversation.deleted",
        True,
    )
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(conversation.id)


def test_conversation_items_api(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    assert conversation.metadata == {}
    added = raw_json(
        client.conversations.items.with_raw_response.create(
            conversation.id,
            items=[
                {"type": "message", "role": "user", "content": f"message {i}"} for i in range(5)
            ],
        )
    )
    page = ConversationItemList.model_validate(added)
    assert len(page.data) == 5 and page.has_more is False
    ids = [item.id for item in page.data]
    listed = client.conversations.items.list(conversation.id)  # default: newest first
    assert [item.id for item in listed.data] == list(reversed(ids))
    first_two = client.conversations.items.list(conversation.id, order="asc", limit=2)
    assert [i.id for i in first_two.data] == ids[:2] and first_two.has_more
    next_two = client.conversations.items.list(
        conversation.id, order="asc", limit=2, after=first_two.data[-1].id
    )
    assert [i.id for i in next_two.data] == ids[2:4]
    walked = [i.id for i in client.conversations.items.list(conversation.id, order="asc", limit=2)]
    assert walked == ids
    item = client.conversations.items.retrieve(ids[1], conversation_id=conversation.id)
    assert item.id == ids[1] and item.type == "message"
    after_delete = client.conversations.items.delete(ids[1], conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    remaining = [i.id for i in client.conversations.items.list(conversation.id, order="asc")]
    assert remaining == [ids[0], *ids[2:]]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(ids[1], conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_missing")


def test_include_is_accepted_and_checked(client: openai.OpenAI, gw: Stack) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "hi"}])
    response = client.responses.create(model="local-llama", input="x")
    include = ["message.output_text.logprobs", "message.input_image.image_url"]
    (item,) = client.conversations.items.list(conversation.id, include=include).data  # type: ignore[arg-type]
    assert (
        client.conversations.items.retrieve(
            item.id,
            conversation_id=conversation.id,
            include=include,  # type: ignore[arg-type]
        ).model_dump()
        == item.model_dump()
    )
    added = client.conversations.items.create(
        conversation.id,
        items=[{"role": "user", "content": "more"}],
        include=include,  # type: ignore[arg-type]
    )
    assert len(added.data) == 1
    assert client.responses.retrieve(response.id, include=include).id == response.id  # type: ignore[arg-type]
    assert client.responses.input_items.list(response.id, include=include).data  # type: ignore[arg-type]
    base = f"{gw.gateway.url}/v1"
    for url in (
        f"{base}/conversations/{conversation.id}/items",
        f"{base}/conversations/{conversation.id}/items/{item.id}",
        f"{base}/responses/{response.id}",
        f"{base}/responses/{response.id}/input_items",
    ):
        for key in ("include[]", "include"):
            raw = httpx.get(url, params={key: ["reasoning.encrypted_content", "bogus.value"]})
            assert raw.status_code == 400, (url, raw.text)
            assert raw.json()["error"]["param"] == "include[1]"
    raw = httpx.post(
        f"{base}/conversations/{conversation.id}/items?include[]=bogus",
        json={"items": [{"role": "user", "content": "never added"}]},
    )
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "include[0]"
    assert len(client.conversations.items.list(conversation.id).data) == 2


def test_item_limits(gw: Stack) -> None:
    url = f"{gw.gateway.url}/v1/conversations"
    too_many = [{"role": "user", "content": "x"}] * 21
    raw = httpx.post(url, json={"items": too_many})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "items"
    conversation = httpx.post(url, json={}).json()
    raw = httpx.post(f"{url}/{conversation['id']}/items", json={"items": too_many})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "items"
    raw = httpx.post(f"{url}/{conversation['id']}/items", json={"items": []})
    assert raw.status_code == 400
    raw = httpx.post(url, json={"metadata": {f"k{i}": "v" for i in range(17)}})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "metadata"


def test_responses_in_a_conversation(client: openai.OpenAI, gw: Stack) -> None:
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "developer", "content": "Be brief."}]
    )
    first = client.responses.with_raw_response.create(
        model="local-llama", input="one", conversation=conversation.id
    )
    response = strict_response(raw_json(first))
    assert response.conversation is not None and response.conversation.id == conversation.id
    second = client.responses.create(
        model="local-llama", input="two", conversation={"id": conversation.id}
    )
    assert second.output_text == "echo: two"
    assert [m["content"] for m in gw.upstream.last.body["messages"]] == [
        "Be brief.",
        "one",
        "echo: one",
        "two",
    ]
    items = client.conversations.items.list(conversation.id, order="asc")
    assert [i.type for i in items.data] == ["message"] * 5
    assert items.data[2].id == response.output[0].id  # stored once, listed by reference
    # Deleting the conversation leaves its responses retrievable.
    client.conversations.delete(conversation.id)
    kept = client.responses.retrieve(second.id)
    assert kept.output_text == "echo: two" and kept.conversation is not None
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="local-llama", input="x", conversation=conversation.id)
    assert caught.value.body["param"] == "conversation"  # type: ignore[index]


def test_failed_response_is_not_appended(client: openai.OpenAI, gw: Stack) -> None:
    from tests.fake_upstream import Fail

    conversation = client.conversations.create()
    gw.upstream.enqueue(Fail(500))
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="local-llama", input="lost", conversation=conversation.id)
    assert client.conversations.items.list(conversation.id).data == []


def test_streamed_and_background_responses_append(client: openai.OpenAI, gw: Stack) -> None:
    conversation = client.conversations.create()
    with client.responses.stream(
        model="local-llama", input="streamed", conversation=conversation.id
    ) as stream:
        stream.get_final_response()
    job = client.responses.create(
        model="local-llama", input="background", conversation=conversation.id, background=True
    )
    for _ in range(200):
        if client.responses.retrieve(job.id).status == "completed":
            break
        asyncio.run(asyncio.sleep(0.02))
    texts = [
        item.content[0].text  # type: ignore[union-attr]
        for item in client.conversations.items.list(conversation.id, order="asc").data
    ]
    assert texts == ["streamed", "echo: streamed", "background", "echo: background"]


def test_item_reference_into_a_conversation(client: openai.OpenAI) -> None:
    response = client.responses.create(model="local-llama", input="remember")
    conversation = client.conversations.create(
        items=[{"type": "item_reference", "id": response.output[0].id}]
    )
    (item,) = client.conversations.items.list(conversation.id).data
    assert item.id == response.output[0].id


def test_concurrent_responses_on_one_conversation(gw: Stack) -> None:
    """Parallel turns: every turn's items land contiguously (input then output) and none is
    lost."""

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=f"{gw.gateway.url}/v1", api_key="x", max_retries=0
        ) as client:
            conversation = await client.conversations.create()
            await asyncio.gather(
                *(
                    client.responses.create(
                        model="local-llama", input=f"turn {i}", conversation=conversation.id
                    )
                    for i in range(12)
                )
            )
            texts = []
            async for item in client.conversations.items.list(
                conversation.id, order="asc", limit=100
            ):
                texts.append(item.content[0].text)  # type: ignore[union-attr]
            return texts

    texts = asyncio.run(run())
    assert len(texts) == 24
    pairs = [(texts[i], texts[i + 1]) for i in range(0, 24, 2)]
    assert all(answer == f"echo: {question}" for question, answer in pairs)
    assert sorted(q for q, _ in pairs) == sorted(f"turn {i}" for i in range(12))


def test_deleted_conversation_items_leave_later_continuations(
    client: openai.OpenAI, gw: Stack
) -> None:
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "secret note"}]
    )
    made = client.responses.create(model="local-llama", input="one", conversation=conversation.id)
    note = client.conversations.items.list(conversation.id, order="asc").data[0]
    client.conversations.items.delete(note.id, conversation_id=conversation.id)
    client.responses.create(model="local-llama", input="two", previous_response_id=made.id)
    assert "secret note" not in str(gw.upstream.last.body["messages"])
    other = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "another note"}]
    )
    made = client.responses.create(model="local-llama", input="three", conversation=other.id)
    # Deleting the conversation does not delete its items (OpenAI: "Items in the conversation
    # will not be deleted"): the response made in it keeps them, and so do its continuations.
    client.conversations.delete(other.id)
    assert "another note" in str(client.responses.input_items.list(made.id).data)
    client.responses.create(model="local-llama", input="four", previous_response_id=made.id)
    assert "another note" in str(gw.upstream.last.body["messages"])


def duplicate_error(item_id: str, param: str) -> dict:
    return {
        "message": f"Duplicate item found with id {item_id}. Remove duplicate items from your "
        "input and try again.",
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


def walk(pages: object, cap: int = 50) -> list[str]:
    """The ids the SDK's auto-pagination yields, stopped after `cap` (a loop would never end)."""
    return [item.id for item in itertools.islice(pages, cap)]  # type: ignore[call-overload]


def test_an_item_already_in_the_conversation_is_refused(client: openai.OpenAI, gw: Stack) -> None:
    """As OpenAI does: an item_reference or a replayed item with the id of an item already in
    the conversation (or twice in one request) is a 400, by the items API and by a response
    created in the conversation; nothing is added, and paging lists every item once."""
    conversation = client.conversations.create(items=[{"role": "user", "content": "note"}])
    first = client.responses.create(model="local-llama", input="one", conversation=conversation.id)
    ids = walk(client.conversations.items.list(conversation.id, order="asc"))
    assert len(ids) == 3 and ids[2] == first.output[0].id
    replayed = first.output[0].model_dump(exclude_none=True)
    fresh = {"type": "message", "id": "msg_client_1", "role": "user", "content": "x"}
    for items, duplicate in (
        ([{"type": "item_reference", "id": first.output[0].id}], first.output[0].id),
        ([{"role": "user", "content": "new"}, replayed], first.output[0].id),
        ([{"type": "item_reference", "id": ids[0]}], ids[0]),
        ([fresh, fresh], "msg_client_1"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.conversations.items.create(conversation.id, items=items)  # type: ignore[arg-type]
        assert caught.value.body == duplicate_error(duplicate, "items")  # type: ignore[comparison-overlap]
    calls = len(gw.upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="local-llama",
            input=[replayed, {"role": "user", "content": "two"}],  # type: ignore[list-item]
            conversation=conversation.id,
        )
    assert caught.value.body == duplicate_error(first.output[0].id, "input")  # type: ignore[comparison-overlap]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model="local-llama",
            input=[{"type": "item_reference", "id": ids[0]}],
            conversation=conversation.id,
        )
    assert len(gw.upstream.requests) == calls  # refused before the upstream
    # An item of another response, not yet in the conversation, is welcome — once.
    other = client.responses.create(model="local-llama", input="elsewhere")
    client.conversations.items.create(
        conversation.id, items=[{"type": "item_reference", "id": other.output[0].id}]
    )
    expected = [*ids, other.output[0].id]
    for limit in (1, 2, 100):
        assert walk(client.conversations.items.list(conversation.id, order="asc", limit=limit)) == (
            expected
        )
        assert walk(client.conversations.items.list(conversation.id, limit=limit)) == list(
            reversed(expected)
        )


def test_racing_requests_add_an_item_once(gw: Stack) -> None:
    """Responses that each bring the same stored item into one conversation, all checked before
    any of them appended (the upstream answers slowly): the conversation still holds it once,
    and each turn's own items all land."""
    from tests.fake_upstream import Reply

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=f"{gw.gateway.url}/v1", api_key="x", max_retries=0
        ) as client:
            shared = (await client.responses.create(model="local-llama", input="shared")).output[0]
            conversation = await client.conversations.create()
            gw.upstream.enqueue(*(Reply(content=f"a{i}", delay=0.5) for i in range(4)))
            await asyncio.gather(
                *(
                    client.responses.create(
                        model="local-llama",
                        input=[
                            {"type": "item_reference", "id": shared.id},
                            {"role": "user", "content": f"q{i}"},
                        ],
                        conversation=conversation.id,
                    )
                    for i in range(4)
                )
            )
            return [
                item.id async for item in client.conversations.items.list(conversation.id, limit=3)
            ]

    ids = asyncio.run(run())
    assert len(ids) == len(set(ids)) == 1 + 4 * 2
