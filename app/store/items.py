"""Writing items, and appending them to a conversation: the pieces every store that creates
items shares (a response, a background job's completion, the conversation items API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

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


async def append_to_conversation(
    tx: Transaction, conversation_id: str, pks: list[int]
) -> list[int] | None:
    """Append items (by pk) to a conversation, atomically and contiguously; returns the pks
    appended, or None if the conversation no longer exists (nothing is written then).

    A conversation holds each item id once, so that `after=<id>` names one position and a
    listing never repeats. Callers refuse duplicates with a 400 before they get here; this is
    the backstop for two requests racing to add the same id: under the row lock the reservation
    takes, an item whose id is already in the conversation (or earlier in `pks`) is skipped."""
    if not pks:
        return []
    reserved = await tx.execute(
        update(conversations_table)
        .where(conversations_table.c.id == conversation_id)
        .values(next_position=conversations_table.c.next_position + len(pks))
        .returning(conversations_table.c.next_position)
    )
    end = reserved.scalar_one_or_none()
    if end is None:
        return None
    rows = await tx.execute(
        select(items_table.c.pk, items_table.c.id).where(items_table.c.pk.in_(set(pks)))
    )
    ids: dict[int, str] = dict(rows.all())
    seen = await conversation_ids(tx, conversation_id, set(ids.values()))
    appended = []
    for pk in pks:
        item_id = ids.get(pk)  # None: a reused item deleted meanwhile; nothing to list
        if item_id is not None and item_id not in seen:
            seen.add(item_id)
            appended.append(pk)
    if appended:
        # Positions only order items: the ones skipped leave a gap, never a collision.
        start = end - len(pks)
        await tx.execute(
            insert(conversation_items_table),
            [
                {"conversation_id": conversation_id, "position": start + offset, "item_pk": pk}
                for offset, pk in enumerate(appended)
            ],
        )
    return appended


async def conversation_ids(tx: Transaction, conversation_id: str, ids: set[str]) -> set[str]:
    """Which of `ids` are ids of items in the conversation."""
    if not ids:
        return set()
    rows = await tx.execute(
        select(items_table.c.id)
        .join(conversation_items_table, conversation_items_table.c.item_pk == items_table.c.pk)
        .where(
            conversation_items_table.c.conversation_id == conversation_id,
            items_table.c.id.in_(sorted(ids)),
        )
    )
    return {item_id for (item_id,) in rows.all()}
