"""Conversations and their items.

A conversation lists stored items by position. Appending reserves a contiguous block of
positions with one `UPDATE … SET next_position = next_position + n RETURNING`, which takes the
conversation's row lock for the rest of the transaction: two responses finishing at once on one
conversation append one after the other — each block contiguous, none lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from app.store.contexts import StoredItem
from app.store.database import Database, Transaction
from app.store.items import append_to_conversation, conversation_ids, insert_items
from app.store.responses import InputEntry
from app.store.rows import conversation_items_table, conversations_table, items_table

members = conversation_items_table


@dataclass(slots=True)
class StoredConversation:
    id: str
    created_at: int
    metadata: dict[str, Any]


class ConversationStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        conversation: StoredConversation,
        project: str,
        entries: list[InputEntry],
    ) -> list[dict[str, Any]]:
        """Insert a conversation with its first items; returns the items in order."""
        async with self._db.transaction() as tx:
            await tx.execute(
                insert(conversations_table),
                {
                    "id": conversation.id,
                    "project": project,
                    "created_at": conversation.created_at,
                    "metadata": conversation.metadata,
                    "next_position": 0,
                },
            )
            return await self._add(tx, conversation.id, project, entries)

    async def _add(
        self, tx: Transaction, conversation_id: str, project: str, entries: list[InputEntry]
    ) -> list[dict[str, Any]]:
        new = [entry for entry in entries if isinstance(entry, dict)]
        fresh = iter(await insert_items(tx, conversation_id, project, new))
        pks = [entry if isinstance(entry, int) else next(fresh) for entry in entries]
        appended = await append_to_conversation(tx, conversation_id, pks) or []
        data = await self._items(tx, appended)
        return [data[pk] for pk in appended]

    async def add_items(
        self, conversation_id: str, project: str, entries: list[InputEntry]
    ) -> list[dict[str, Any]] | None:
        async with self._db.transaction() as tx:
            if await self._get(tx, conversation_id, project) is None:
                return None
            return await self._add(tx, conversation_id, project, entries)

    async def present_ids(self, conversation_id: str, ids: set[str]) -> set[str]:
        """Which of `ids` are already items of the conversation (each id is there at most
        once; see `append_to_conversation`)."""
        async with self._db.transaction() as tx:
            return await conversation_ids(tx, conversation_id, ids)

    @staticmethod
    async def _items(tx: Transaction, pks: list[int]) -> dict[int, dict[str, Any]]:
        if not pks:
            return {}
        rows = await tx.execute(
            select(items_table.c.pk, items_table.c.data).where(items_table.c.pk.in_(set(pks)))
        )
        return {pk: data for pk, data in rows.all()}

    @staticmethod
    async def _get(
        tx: Transaction, conversation_id: str, project: str
    ) -> StoredConversation | None:
        row = (
            await tx.execute(
                select(
                    conversations_table.c.id,
                    conversations_table.c.created_at,
                    conversations_table.c.metadata,
                ).where(
                    conversations_table.c.id == conversation_id,
                    conversations_table.c.project == project,
                )
            )
        ).first()
        return StoredConversation(row.id, row.created_at, row.metadata) if row else None

    async def get(self, conversation_id: str, project: str) -> StoredConversation | None:
        async with self._db.transaction() as tx:
            return await self._get(tx, conversation_id, project)

    async def update_metadata(
        self, conversation_id: str, project: str, metadata: dict[str, Any]
    ) -> StoredConversation | None:
        async with self._db.transaction() as tx:
            await tx.execute(
                update(conversations_table)
                .where(
                    conversations_table.c.id == conversation_id,
                    conversations_table.c.project == project,
                )
                .values(metadata=metadata)
            )
            return await self._get(tx, conversation_id, project)

    async def delete(self, conversation_id: str, project: str) -> bool:
        """Delete the conversation: its row and its list of items. The items themselves stay,
        as OpenAI's API says ("Items in the conversation will not be deleted"): the responses
        made in it keep them in their input and their continuations' context. Deleting an item
        through the items API, or a response, is what removes content."""
        async with self._db.transaction() as tx:
            gone = await tx.execute(
                delete(conversations_table).where(
                    conversations_table.c.id == conversation_id,
                    conversations_table.c.project == project,
                )
            )
            if gone.rowcount == 0:
                return False
            await tx.execute(delete(members).where(members.c.conversation_id == conversation_id))
        return True

    async def context(self, conversation_id: str, project: str) -> list[StoredItem] | None:
        """Every item of the conversation, oldest first (the context a response starts from)."""
        async with self._db.transaction() as tx:
            if await self._get(tx, conversation_id, project) is None:
                return None
            rows = await tx.execute(
                select(items_table.c.pk, items_table.c.data)
                .join(members, members.c.item_pk == items_table.c.pk)
                .where(members.c.conversation_id == conversation_id)
                .order_by(members.c.position)
            )
            return [StoredItem(pk, data) for pk, data in rows.all()]

    async def list_items(
        self, conversation_id: str, project: str, *, limit: int, order: str, after: str | None
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of items and whether more follow; None if the conversation does not exist.
        Raises LookupError if `after` is not an item of the conversation."""
        async with self._db.transaction() as tx:
            if await self._get(tx, conversation_id, project) is None:
                return None
            query = (
                select(items_table.c.data)
                .join(members, members.c.item_pk == items_table.c.pk)
                .where(members.c.conversation_id == conversation_id)
            )
            if after is not None:
                cursor = await self._position(tx, conversation_id, after)
                if cursor is None:
                    raise LookupError(after)
                query = query.where(
                    members.c.position > cursor if order == "asc" else members.c.position < cursor
                )
            ordering = members.c.position.asc() if order == "asc" else members.c.position.desc()
            rows = (await tx.execute(query.order_by(ordering).limit(limit + 1))).all()
        page = [data for (data,) in rows]
        return page[:limit], len(page) > limit

    @staticmethod
    async def _position(tx: Transaction, conversation_id: str, item_id: str) -> int | None:
        result = await tx.execute(
            select(members.c.position)
            .join(items_table, members.c.item_pk == items_table.c.pk)
            .where(members.c.conversation_id == conversation_id, items_table.c.id == item_id)
            .order_by(members.c.position)
            .limit(1)
        )
        position: int | None = result.scalar_one_or_none()
        return position

    async def get_item(
        self, conversation_id: str, project: str, item_id: str
    ) -> dict[str, Any] | None:
        async with self._db.transaction() as tx:
            if await self._get(tx, conversation_id, project) is None:
                return None
            row = (
                await tx.execute(
                    select(items_table.c.data)
                    .join(members, members.c.item_pk == items_table.c.pk)
                    .where(
                        members.c.conversation_id == conversation_id, items_table.c.id == item_id
                    )
                    .order_by(members.c.position)
                    .limit(1)
                )
            ).first()
            return row.data if row else None

    async def delete_item(self, conversation_id: str, project: str, item_id: str) -> bool:
        """Remove an item from the conversation (and delete it, if the conversation created
        it). Returns False if the conversation or the item does not exist."""
        async with self._db.transaction() as tx:
            if await self._get(tx, conversation_id, project) is None:
                return False
            position = await self._position(tx, conversation_id, item_id)
            if position is None:
                return False
            pk = (
                await tx.execute(
                    select(members.c.item_pk).where(
                        members.c.conversation_id == conversation_id,
                        members.c.position == position,
                    )
                )
            ).scalar_one()
            await tx.execute(
                delete(members).where(
                    members.c.conversation_id == conversation_id, members.c.position == position
                )
            )
            await tx.execute(
                delete(items_table).where(
                    items_table.c.pk == pk, items_table.c.response_id == conversation_id
                )
            )
            await tx.notify("rg_deletes", conversation_id)
        return True
