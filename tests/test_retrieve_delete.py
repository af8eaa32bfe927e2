"""GET, DELETE and input_items listing: shapes, pagination and not-found answers."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.wire import strict_response


def test_retrieve_equals_create(client: openai.OpenAI) -> None:
    created = client.responses.with_raw_response.create(
        model="local-llama", input="hello", metadata={"k": "v"}
    ).http_response.json()
    fetched = client.responses.with_raw_response.retrieve(created["id"]).http_response.json()
    assert fetched == created
    strict_response(fetched)
    # `include` (as the SDK sends it, `include[]=…`) is accepted on both reads.
    included = client.responses.with_raw_response.retrieve(
        created["id"], include=["message.output_text.logprobs"], include_obfuscation=False
    ).http_response.json()
    assert included == created
    items = client.responses.input_items.list(
        created["id"], include=["message.input_image.image_url"]
    )
    assert [item.type for item in items.data] == ["message"]


def test_delete(client: openai.OpenAI, gw: Stack) -> None:
    response = client.responses.create(model="local-llama", input="bye")
    raw = httpx.delete(f"{gw.gateway.url}/v1/responses/{response.id}")
    assert raw.status_code == 200
    assert raw.json() == {"id": response.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response.id)
    assert caught.value.body == {  # type: ignore[comparison-overlap]
        "message": f"Response with id '{response.id}' not found.",
        "type": "invalid_request_error",
        "param": "response_id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(response.id)


def make_chain(client: openai.OpenAI, turns: int) -> list[str]:
    ids: list[str] = []
    previous = None
    for turn in range(turns):
        response = client.responses.create(
            model="local-llama", input=f"turn {turn}", previous_response_id=previous
        )
        previous = response.id
        ids.append(response.id)
    return ids


def test_input_items_pagination(client: openai.OpenAI) -> None:
    last = make_chain(client, 4)[-1]  # 4 inputs + 3 outputs = 7 input items of the last turn
    everything = client.responses.input_items.list(last, order="asc", limit=100)
    texts = [item.content[0].text for item in everything.data]  # type: ignore[union-attr]
    assert texts == [
        "turn 0",
        "echo: turn 0",
        "turn 1",
        "echo: turn 1",
        "turn 2",
        "echo: turn 2",
        "turn 3",
    ]
    assert everything.has_more is False
    assert everything.first_id == everything.data[0].id
    assert everything.last_id == everything.data[-1].id

    default = client.responses.input_items.list(last)  # desc, limit 20
    assert [item.id for item in default.data] == [item.id for item in reversed(everything.data)]

    page = client.responses.input_items.list(last, order="asc", limit=3)
    assert [i.id for i in page.data] == [i.id for i in everything.data[:3]] and page.has_more
    page2 = client.responses.input_items.list(last, order="asc", limit=3, after=page.last_id)
    assert [i.id for i in page2.data] == [i.id for i in everything.data[3:6]] and page2.has_more
    page3 = client.responses.input_items.list(last, order="asc", limit=3, after=page2.last_id)
    assert [i.id for i in page3.data] == [everything.data[6].id] and not page3.has_more

    # The SDK's auto-pagination walks the same cursor.
    walked = [item.id for item in client.responses.input_items.list(last, order="asc", limit=2)]
    assert walked == [item.id for item in everything.data]


@pytest.mark.parametrize(
    ("query", "param"), [("limit=0", "limit"), ("limit=101", "limit"), ("order=up", "order")]
)
def test_input_items_bad_query(gw: Stack, client: openai.OpenAI, query: str, param: str) -> None:
    response = client.responses.create(model="local-llama", input="x")
    raw = httpx.get(f"{gw.gateway.url}/v1/responses/{response.id}/input_items?{query}")
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == param
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_cancel_of_a_non_background_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model="local-llama", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_missing")
