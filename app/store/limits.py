"""Per-key rate-limit counters in fixed one-minute windows, on the database every replica shares.

Admitting a request is one statement: an UPSERT that adds 1 to the key's current window only
while it is under its limits, and returns the new counts. Concurrent admissions of one key
serialize on that row (PostgreSQL's row lock, SQLite's single writer), so no replica can admit
more than the limit allows in a window. Tokens are added after the fact, when usage is flushed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.store.database import Database
from app.store.rows import rate_windows_table

WINDOW_SECONDS = 60

table = rate_windows_table


@dataclass(frozen=True, slots=True)
class WindowCounts:
    requests: int
    tokens: int


class LimitStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._insert = pg_insert if database.postgres else sqlite_insert

    async def admit(
        self, key_id: str, window: int, rpm: int | None, tpm: int | None
    ) -> tuple[bool, WindowCounts]:
        """Count one request in `window` if the key is under both limits. Returns whether it
        was admitted and the window's counts after the call."""
        under: list[ColumnElement[bool]] = []
        if rpm is not None:
            under.append(table.c.requests < rpm)
        if tpm is not None:
            under.append(table.c.tokens < tpm)
        statement = (
            self._insert(table)
            .values(key_id=key_id, window=window, requests=1, tokens=0)
            .on_conflict_do_update(
                index_elements=[table.c.key_id, table.c.window],
                set_={"requests": table.c.requests + 1},
                where=and_(*under) if under else None,
            )
            .returning(table.c.requests, table.c.tokens)
        )
        async with self._db.transaction() as tx:
            row = (await tx.execute(statement)).first()
            if row is not None:
                return True, WindowCounts(row.requests, row.tokens)
            current = (
                await tx.execute(
                    select(table.c.requests, table.c.tokens).where(
                        table.c.key_id == key_id, table.c.window == window
                    )
                )
            ).one()
        return False, WindowCounts(current.requests, current.tokens)

    async def add_tokens(self, window: int, tokens: dict[str, int]) -> None:
        """Add tokens used per key to `window` (one statement per key)."""
        if not tokens:
            return
        async with self._db.transaction() as tx:
            for key_id, count in sorted(tokens.items()):  # sorted: no lock-order deadlocks
                statement = (
                    self._insert(table)
                    .values(key_id=key_id, window=window, requests=0, tokens=count)
                    .on_conflict_do_update(
                        index_elements=[table.c.key_id, table.c.window],
                        set_={"tokens": table.c.tokens + count},
                    )
                )
                await tx.execute(statement)

    async def prune(self, before: int) -> int:
        """Drop windows that started before `before`."""
        async with self._db.transaction() as tx:
            result = await tx.execute(delete(table).where(table.c.window < before))
            return int(result.rowcount or 0)
