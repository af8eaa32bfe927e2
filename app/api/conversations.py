"""`/v1/conversations` routes: parse, hand to core, serialize."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.deps import Caller, Conversations, checked_include, json_response, read_body
from app.schemas.requests import (
    AddConversationItemsRequest,
    CreateConversationRequest,
    UpdateConversationRequest,
)

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


@router.post("")
async def create_conversation(
    request: Request, conversations: Conversations, caller: Caller
) -> Response:
    body = await read_body(request, CreateConversationRequest)
    return json_response(
        await conversations.create(caller.project, body.metadata, list(body.items or ()))
    )


@router.get("/{conversation_id}")
async def retrieve_conversation(
    conversation_id: str, conversations: Conversations, caller: Caller
) -> Response:
    return json_response(await conversations.retrieve(conversation_id, caller.project))


@router.post("/{conversation_id}")
async def update_conversation(
    conversation_id: str, request: Request, conversations: Conversations, caller: Caller
) -> Response:
    body = await read_body(request, UpdateConversationRequest)
    return json_response(
        await conversations.update(conversation_id, caller.project, body.metadata or {})
    )


@router.delete("/{conversation_id}")
async def delete_conversation(
    conversation_id: str, conversations: Conversations, caller: Caller
) -> Response:
    return json_response(await conversations.delete(conversation_id, caller.project))


@router.post("/{conversation_id}/items", dependencies=[checked_include])
async def add_items(
    conversation_id: str, request: Request, conversations: Conversations, caller: Caller
) -> Response:
    body = await read_body(request, AddConversationItemsRequest)
    return json_response(
        await conversations.add_items(conversation_id, caller.project, list(body.items))
    )


@router.get("/{conversation_id}/items", dependencies=[checked_include])
async def list_items(
    conversation_id: str,
    conversations: Conversations,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Response:
    page = await conversations.list_items(
        conversation_id, caller.project, limit=limit, order=order, after=after
    )
    return json_response(page)


@router.get("/{conversation_id}/items/{item_id}", dependencies=[checked_include])
async def retrieve_item(
    conversation_id: str, item_id: str, conversations: Conversations, caller: Caller
) -> Response:
    return json_response(
        await conversations.retrieve_item(conversation_id, caller.project, item_id)
    )


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, conversations: Conversations, caller: Caller
) -> Response:
    return json_response(await conversations.delete_item(conversation_id, caller.project, item_id))
