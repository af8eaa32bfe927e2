"""Writing items, and appending them to a conversation: the pieces every store that creates
items shares (a response, a background job's completion, the conversation items API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, update

from app.store.database import Transaction
from app.store.rows import conversation_items_table, conversations_table, items_table

# Only a response that produced an answer adds its turn to its conversation.
APPENDED_STATUSES = frozenset({"completed", "incomplete"})


async def insert_items(
    connection: Transaction,
    response_id: str,
    project: str,
    items: list[dict[str, Any]],
) -> list[int]:
    if not items:
        return []
    rows = [
        {
            "id": item["id"],
            "response_id": response_id,
            "project": project,
            "type": item["type"],
            "data": item,
        }
        for item in items
    ]
    result = await connection.execute(
        insert(items_table).returning(items_table.c.pk, sort_by_parameter_order=True), rows
    )
    return [pk for (pk,) in result.all()]


async def append_to_conversation(tx: Transaction, conversation_id: str, pks: list[int]) -> bool:
    """Append items (by pk) to a conversation, atomically and contiguously. Returns False if
    the conversation no longer exists (nothing is written then)."""
    if not pks:
        return True
    reserved = await tx.execute(
        update(conversations_table)
        .where(conversations_table.c.id == conversation_id)
        .values(next_position=conversations_table.c.next_position + len(pks))
        .returning(conversations_table.c.next_position)
    )
    end = reserved.scalar_one_or_none()
    if end is None:
        return False
    start = end - len(pks)
    await tx.execute(
        insert(conversation_items_table),
        [
            {"conversation_id": conversation_id, "position": start + offset, "item_pk": pk}
            for offset, pk in enumerate(pks)
        ],
    )
    return True
