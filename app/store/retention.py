"""Purging stored responses older than the retention TTL, in bounded batches.

A purged response goes with everything it owns (items, job, stream events), as a DELETE does.
Background responses still queued or in progress are left alone until they finish. Responses
that continued a purged one keep working; their context loses the purged turn's items.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, not_, select

from app.store.database import Database
from app.store.rows import events_table, items_table, jobs_table, responses_table

BATCH = 500


class RetentionStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def purge_responses(self, created_before: float, max_batches: int = 20) -> int:
        """Delete responses created before `created_before` (epoch seconds); returns how many.
        Each batch is its own short transaction, so a large backlog never holds locks long."""
        purged = 0
        in_flight = and_(
            responses_table.c.background, responses_table.c.status.in_(["queued", "in_progress"])
        )
        for _ in range(max_batches):
            async with self._db.transaction() as tx:
                ids = [
                    response_id
                    for (response_id,) in (
                        await tx.execute(
                            select(responses_table.c.id)
                            .where(responses_table.c.created_at < created_before, not_(in_flight))
                            .limit(BATCH)
                        )
                    ).all()
                ]
                if not ids:
                    break
                for table in (items_table, jobs_table, events_table):
                    await tx.execute(delete(table).where(table.c.response_id.in_(ids)))
                await tx.execute(delete(responses_table).where(responses_table.c.id.in_(ids)))
                await tx.notify("rg_deletes", "")  # as a DELETE: cached contexts may hold them
            purged += len(ids)
            if len(ids) < BATCH:
                break
        return purged
