"""Read-only numbers for readiness and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select, text

from app.store.database import Database
from app.store.rows import jobs_table


@dataclass(frozen=True, slots=True)
class QueueStats:
    queued: int
    running: int
    oldest_queued_age: float  # seconds; 0 when nothing is queued


async def queue_stats(database: Database) -> QueueStats:
    """The shared queue as every replica sees it (one grouped query)."""
    query = (
        select(jobs_table.c.status, func.count(), func.min(jobs_table.c.created_at))
        .where(jobs_table.c.status.in_(["queued", "running"]))
        .group_by(jobs_table.c.status)
    )
    async with database.transaction() as tx:
        rows = {
            status: (count, oldest) for status, count, oldest in (await tx.execute(query)).all()
        }
    queued, oldest = rows.get("queued", (0, None))
    running = rows.get("running", (0, None))[0]
    age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
    return QueueStats(int(queued), int(running), age)


async def ping(database: Database) -> None:
    """Raises `StorageError` if the database does not answer."""
    async with database.transaction() as tx:
        await tx.execute(text("SELECT 1"))
