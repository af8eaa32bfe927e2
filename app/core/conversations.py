"""The Conversations API: a conversation is an ordered list of stored items that responses
created with `conversation` start from and append their turn to.

Deleting a conversation deletes it and the items added through its own items API; responses
made in it are not deleted: they stay retrievable (their `conversation.id` still names the
deleted conversation) and `previous_response_id` still continues them.
"""

from __future__ import annotations

import time
from typing import Any

from app.core.items import check_unique_ids, resolve_items
from app.errors import GatewayError, NotFoundError, missing_or_malformed
from app.ids import new_id
from app.schemas.requests import ConcreteInput, CreateResponseRequest
from app.schemas.responses import list_object
from app.store.contexts import StoredItem
from app.store.conversations import ConversationStore, StoredConversation
from app.store.database import Database
from app.store.responses import ResponseStore


def conversation_id_of(request: CreateResponseRequest) -> str | None:
    conversation = request.conversation
    if conversation is None or isinstance(conversation, str):
        return conversation
    return conversation.id


def conversation_not_found(conversation_id: str, param: str | None = None) -> GatewayError:
    """`param`: the create field naming it (`conversation`); a path's id is `conversation_id`
    in the 400 for a malformed one, and no param in the 404."""
    return missing_or_malformed(
        "Conversation", conversation_id, "conv", param or "conversation_id", not_found_param=param
    )


def conversation_object(conversation: StoredConversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": conversation.created_at,
        "metadata": conversation.metadata,
    }


class ConversationsService:
    def __init__(self, database: Database) -> None:
        self._store = ConversationStore(database)
        self._items = ResponseStore(database)

    async def _entries(
        self, items: list[ConcreteInput], project: str, conversation_id: str | None = None
    ) -> list[StoredItem | dict[str, Any]]:
        entries = await resolve_items(self._items, items, project, reuse=True, param="items")
        ids = {(e.data if isinstance(e, StoredItem) else e)["id"] for e in entries}
        present = await self._store.present_ids(conversation_id, ids) if conversation_id else ()
        check_unique_ids(present, entries, "items")
        return entries

    async def create(
        self, project: str, metadata: dict[str, str] | None, items: list[ConcreteInput]
    ) -> dict[str, Any]:
        entries = await self._entries(items, project)
        conversation = StoredConversation(new_id("conv"), int(time.time()), metadata or {})
        await self._store.create(
            conversation,
            project,
            [entry.pk if isinstance(entry, StoredItem) else entry for entry in entries],
        )
        return conversation_object(conversation)

    async def retrieve(self, conversation_id: str, project: str) -> dict[str, Any]:
        conversation = await self._store.get(conversation_id, project)
        if conversation is None:
            raise conversation_not_found(conversation_id)
        return conversation_object(conversation)

    async def update(
        self, conversation_id: str, project: str, metadata: dict[str, str]
    ) -> dict[str, Any]:
        conversation = await self._store.update_metadata(conversation_id, project, metadata)
        if conversation is None:
            raise conversation_not_found(conversation_id)
        return conversation_object(conversation)

    async def delete(self, conversation_id: str, project: str) -> dict[str, Any]:
        if not await self._store.delete(conversation_id, project):
            raise conversation_not_found(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(
        self, conversation_id: str, project: str, items: list[ConcreteInput]
    ) -> dict[str, Any]:
        if await self._store.get(conversation_id, project) is None:
            raise conversation_not_found(conversation_id)
        entries = await self._entries(items, project, conversation_id)
        added = await self._store.add_items(
            conversation_id,
            project,
            [entry.pk if isinstance(entry, StoredItem) else entry for entry in entries],
        )
        if added is None:
            raise conversation_not_found(conversation_id)
        return list_object(added, has_more=False)

    async def list_items(
        self, conversation_id: str, project: str, *, limit: int, order: str, after: str | None
    ) -> dict[str, Any]:
        try:
            page = await self._store.list_items(
                conversation_id, project, limit=limit, order=order, after=after
            )
        except LookupError:
            raise NotFoundError(
                f"Item with id '{after}' is not in conversation '{conversation_id}'.",
                param="after",
            ) from None
        if page is None:
            raise conversation_not_found(conversation_id)
        items, has_more = page
        return list_object(items, has_more)

    async def retrieve_item(
        self, conversation_id: str, project: str, item_id: str
    ) -> dict[str, Any]:
        item = await self._store.get_item(conversation_id, project, item_id)
        if item is None:
            await self.retrieve(conversation_id, project)  # 404 for the conversation first
            raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id")
        return item

    async def delete_item(self, conversation_id: str, project: str, item_id: str) -> dict[str, Any]:
        """Remove the item; the answer is the conversation, as OpenAI's is."""
        if not await self._store.delete_item(conversation_id, project, item_id):
            await self.retrieve(conversation_id, project)
            raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id")
        return await self.retrieve(conversation_id, project)
