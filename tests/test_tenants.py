"""Tenant isolation with two API keys of two projects, on both databases: every endpoint given
another project's id answers exactly as for an id that does not exist. Also 401s, the admin
API, and revocation within the cache bound across two gateways sharing one database."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai

from tests.conftest import GatewayServer
from tests.tenancy import (
    ADMIN_KEY,
    CACHE_SECONDS,
    TERMINAL,
    Tenants,
    failure,
    same_as_missing,
    slow,
    wait_status,
)

# --- isolation ---------------------------------------------------------------------------------


def test_stored_response_endpoints_hide_other_projects(tenants: Tenants) -> None:
    with tenants.client(tenants.a) as a, tenants.client(tenants.b) as b:
        mine = a.responses.create(model="local-llama", input="alpha's secret plan")
        missing = "resp_" + "0" * 48

        same_as_missing(mine.id, missing, lambda rid: b.responses.retrieve(rid))
        same_as_missing(mine.id, missing, lambda rid: b.responses.input_items.list(rid))
        _, body = same_as_missing(mine.id, missing, lambda rid: b.responses.cancel(rid))
        assert body["param"] == "response_id"
        same_as_missing(mine.id, missing, lambda rid: b.responses.delete(rid))
        _, body = same_as_missing(
            mine.id,
            missing,
            lambda rid: b.responses.create(
                model="local-llama", input="continue", previous_response_id=rid
            ),
        )
        assert body["code"] == "previous_response_not_found"

        # The owner still sees everything, untouched by the other project's attempts.
        assert a.responses.retrieve(mine.id).output_text == "echo: alpha's secret plan"
        assert [i.type for i in a.responses.input_items.list(mine.id)] == ["message"]
        follow = a.responses.create(
            model="local-llama", input="and then?", previous_response_id=mine.id
        )
        assert follow.status == "completed"
        assert len(tenants.upstream.last.body["messages"]) == 3


def test_conversation_endpoints_hide_other_projects(tenants: Tenants) -> None:
    with tenants.client(tenants.a) as a, tenants.client(tenants.b) as b:
        mine = a.conversations.create(
            items=[{"type": "message", "role": "user", "content": "alpha's notes"}]
        )
        item_id = a.conversations.items.list(mine.id).data[0].id
        missing = "conv_" + "0" * 48

        same_as_missing(mine.id, missing, lambda cid: b.conversations.retrieve(cid))
        same_as_missing(
            mine.id, missing, lambda cid: b.conversations.update(cid, metadata={"x": "y"})
        )
        same_as_missing(mine.id, missing, lambda cid: b.conversations.items.list(cid))
        same_as_missing(
            mine.id,
            missing,
            lambda cid: b.conversations.items.create(
                cid, items=[{"type": "message", "role": "user", "content": "intrusion"}]
            ),
        )
        same_as_missing(
            mine.id,
            missing,
            lambda cid: b.conversations.items.retrieve(item_id, conversation_id=cid),
        )
        same_as_missing(
            mine.id, missing, lambda cid: b.conversations.items.delete(item_id, conversation_id=cid)
        )
        same_as_missing(mine.id, missing, lambda cid: b.conversations.delete(cid))
        _, body = same_as_missing(
            mine.id,
            missing,
            lambda cid: b.responses.create(model="local-llama", input="x", conversation=cid),
        )
        assert body["param"] == "conversation"

        # The owner's conversation is untouched and usable.
        assert a.conversations.retrieve(mine.id).metadata == {}
        texts = [i.content[0].text for i in a.conversations.items.list(mine.id).data]  # type: ignore[union-attr]
        assert texts == ["alpha's notes"]
        turn = a.responses.create(model="local-llama", input="go on", conversation=mine.id)
        assert turn.status == "completed"


def test_item_reference_to_another_projects_item_is_not_found(tenants: Tenants) -> None:
    with tenants.client(tenants.a) as a, tenants.client(tenants.b) as b:
        mine = a.responses.create(model="local-llama", input="alpha only")
        item_id = mine.output[0].id
        assert item_id

        def refer(iid: str) -> Any:
            return b.responses.create(
                model="local-llama", input=[{"type": "item_reference", "id": iid}]
            )

        _, body = same_as_missing(item_id, "msg_" + "0" * 40, refer)
        assert body["param"] == "input[0].id"
        # The owner can refer to it.
        again = a.responses.create(
            model="local-llama", input=[{"type": "item_reference", "id": item_id}]
        )
        assert again.status == "completed"


def test_token_counts_and_conversation_items_hide_other_projects(tenants: Tenants) -> None:
    with tenants.client(tenants.a) as a, tenants.client(tenants.b) as b:
        mine = a.responses.create(model="local-llama", input="alpha's draft")
        conversation = a.conversations.create()
        item_id = mine.output[0].id
        assert item_id

        _, body = same_as_missing(
            mine.id,
            "resp_" + "3" * 48,
            lambda rid: b.responses.input_tokens.count(
                model="local-llama", input="x", previous_response_id=rid
            ),
        )
        assert body["code"] == "previous_response_not_found"
        _, body = same_as_missing(
            conversation.id,
            "conv_" + "3" * 48,
            lambda cid: b.responses.input_tokens.count(
                model="local-llama", input="x", conversation=cid
            ),
        )
        assert body["param"] == "conversation"
        _, body = same_as_missing(
            item_id,
            "msg_" + "3" * 40,
            lambda iid: b.responses.input_tokens.count(
                model="local-llama", input=[{"type": "item_reference", "id": iid}]
            ),
        )
        assert body["param"] == "input[0].id"
        # An item reference can no more carry another project's item into a conversation.
        theirs = b.conversations.create()
        for attempt in (
            lambda iid: b.conversations.create(items=[{"type": "item_reference", "id": iid}]),
            lambda iid: b.conversations.items.create(
                theirs.id, items=[{"type": "item_reference", "id": iid}]
            ),
        ):
            _, body = same_as_missing(item_id, "msg_" + "4" * 40, attempt)
            assert body["param"] == "items[0].id"
        assert b.conversations.items.list(theirs.id).data == []
        # Without a key, a bad `include` is still a 401 first.
        raw = httpx.get(
            f"{tenants.gateway.url}/v1/conversations/{conversation.id}/items?include[]=bogus"
        )
        assert raw.status_code == 401
        # The owner can.
        counted = a.responses.input_tokens.count(
            model="local-llama", input="x", previous_response_id=mine.id
        )
        assert counted.input_tokens > 0
        a.conversations.items.create(
            conversation.id, items=[{"type": "item_reference", "id": item_id}]
        )
        assert [i.id for i in a.conversations.items.list(conversation.id)] == [item_id]


def test_background_cancel_delete_and_stream_resume_hide_other_projects(
    tenants: Tenants,
) -> None:
    tenants.upstream.enqueue(slow())
    with tenants.client(tenants.a) as a, tenants.client(tenants.b) as b:
        with a.responses.create(
            model="local-llama", input="long", background=True, stream=True
        ) as events:
            created = next(iter(events))
        rid = created.response.id
        wait_status(a, rid, {"in_progress"})
        missing = "resp_" + "1" * 48

        same_as_missing(rid, missing, lambda r: b.responses.cancel(r))
        same_as_missing(
            rid, missing, lambda r: b.responses.retrieve(r, stream=True, starting_after=0)
        )
        same_as_missing(rid, missing, lambda r: b.responses.delete(r))
        same_as_missing(rid, missing, lambda r: b.responses.retrieve(r))

        # Still running for its owner, who can resume its stream and cancel it.
        assert a.responses.retrieve(rid).status == "in_progress"
        with a.responses.retrieve(rid, stream=True, starting_after=0) as resumed:
            first = next(iter(resumed))
        assert first.sequence_number == 1
        cancelled = a.responses.cancel(rid)
        assert cancelled.status == "cancelled"


def test_queued_background_job_hidden_and_finishes_for_its_owner(tenants: Tenants) -> None:
    with tenants.client(tenants.a) as a, tenants.client(tenants.b) as b:
        job = a.responses.create(model="local-llama", input="background hello", background=True)
        same_as_missing(job.id, "resp_" + "2" * 48, lambda r: b.responses.cancel(r))
        assert wait_status(a, job.id, TERMINAL) == "completed"
        assert a.responses.retrieve(job.id).output_text == "echo: background hello"


def test_models_need_a_key_too(tenants: Tenants) -> None:
    with tenants.client(tenants.b) as b:
        assert "local-llama" in [m.id for m in b.models.list()]
    with tenants.client("sk-rg-wrong") as nobody:
        status, body = failure(lambda: nobody.models.list())
    assert status == 401 and body["code"] == "invalid_api_key"


# --- authentication ----------------------------------------------------------------------------


def test_missing_and_invalid_keys_get_401_invalid_api_key(tenants: Tenants) -> None:
    url = f"{tenants.gateway.url}/v1/responses"
    for headers in ({}, {"authorization": "Bearer"}, {"authorization": "Basic abc"}):
        r = httpx.post(url, json={"model": "local-llama", "input": "hi"}, headers=headers)
        assert r.status_code == 401, headers
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
    with tenants.client("sk-rg-not-a-real-key-at-all") as nobody:
        status, body = failure(lambda: nobody.responses.create(model="local-llama", input="hi"))
        assert status == 401
        assert body["code"] == "invalid_api_key"
        assert "not-a-real-key-at-all" not in body["message"]  # never echoed whole
        status, _ = failure(lambda: nobody.responses.retrieve("resp_x"))
        assert status == 401
    assert not tenants.upstream.requests


def test_admin_api_needs_the_admin_key(tenants: Tenants) -> None:
    for key in ("none", "wrong", tenants.a):
        r = tenants.admin("GET", "/admin/keys", key=key)
        assert r.status_code == 401, key
        assert r.json()["error"]["code"] == "invalid_api_key"
    # An admin key is not a project key.
    with tenants.client(ADMIN_KEY) as admin:
        status, _ = failure(lambda: admin.responses.create(model="local-llama", input="hi"))
        assert status == 401


def test_admin_lists_keys_without_secrets_and_validates_input(tenants: Tenants) -> None:
    listed = tenants.admin("GET", "/admin/keys", params={"project": "alpha"}).json()
    assert listed["object"] == "list" and listed["data"]
    for key in listed["data"]:
        assert key["project"] == "alpha"
        assert "key" not in key and "hash" not in key
        assert tenants.a.startswith(key["prefix"]) or key["prefix"] != tenants.a
    assert any(tenants.a.startswith(k["prefix"]) for k in listed["data"])
    bad = tenants.admin("POST", "/admin/keys", json={"project": "no spaces!"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "project"
    bad = tenants.admin("POST", "/admin/keys", json={"project": "p", "rpm": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm"
    unknown = tenants.admin("DELETE", "/admin/keys/key_nope")
    assert unknown.status_code == 404


def test_revocation_takes_effect_within_the_cache_bound_on_every_replica(
    tenants: Tenants,
) -> None:
    key = tenants.new_key("gamma")
    key_id = next(
        k["id"]
        for k in tenants.admin("GET", "/admin/keys", params={"project": "gamma"}).json()["data"]
        if key.startswith(k["prefix"])
    )
    replica = GatewayServer(tenants.settings).start()
    try:
        with tenants.client(key) as here, tenants.client(key, replica) as there:
            here.models.list()
            there.models.list()  # cached on the other replica now
            revoked = tenants.admin("DELETE", f"/admin/keys/{key_id}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            status, _ = failure(lambda: here.models.list())  # this replica: at once
            assert status == 401
            deadline = time.monotonic() + CACHE_SECONDS + 1.0
            while time.monotonic() < deadline:
                try:
                    there.models.list()
                except openai.AuthenticationError:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the revoked key still works on the other replica")
    finally:
        replica.stop()
