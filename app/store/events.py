"""Reading persisted stream events of background responses, and pruning them."""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select

from app.store.database import Database, Transaction
from app.store.rows import events_table, jobs_table


async def append_events(tx: Transaction, response_id: str, events: list[dict[str, Any]]) -> None:
    """Persist events (each carries its sequence number) and wake the followers."""
    if not events:
        return
    await tx.execute(
        insert(events_table),
        [
            {"response_id": response_id, "sequence_number": e["sequence_number"], "data": e}
            for e in events
        ],
    )
    await tx.notify("rg_events", response_id)


def event_arguments(events: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    """Events as the raw PostgreSQL statements take them: their sequence numbers and their JSON
    texts, two arrays in one order (numbers taken in Python, never extracted in SQL from the
    data, which may hold a `\\u0000` no JSON operator can turn into text)."""
    return (
        [event["sequence_number"] for event in events],
        [orjson.dumps(event).decode() for event in events],
    )


class EventStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def read_after(
        self, response_id: str, after: int, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Events with a sequence number above `after`, in order."""
        async with self._db.transaction() as tx:
            rows = await tx.execute(
                select(events_table.c.data)
                .where(
                    events_table.c.response_id == response_id,
                    events_table.c.sequence_number > after,
                )
                .order_by(events_table.c.sequence_number)
                .limit(limit)
            )
            return [data for (data,) in rows.all()]

    async def last_sequence(self, response_id: str) -> int | None:
        async with self._db.transaction() as tx:
            result = await tx.execute(
                select(func.max(events_table.c.sequence_number)).where(
                    events_table.c.response_id == response_id
                )
            )
            value = result.scalar_one_or_none()
            return int(value) if value is not None else None

    async def prune(self, retention_seconds: float) -> int:
        """Delete the events of background responses that finished more than
        `retention_seconds` ago. Returns how many rows went."""
        finished = select(jobs_table.c.response_id).where(
            jobs_table.c.finished_at < time.time() - retention_seconds
        )
        async with self._db.transaction() as tx:
            result = await tx.execute(
                delete(events_table).where(events_table.c.response_id.in_(finished))
            )
            return int(result.rowcount or 0)
