"""API keys: stored as a SHA-256 of the key, found by that hash."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update

from app.store.database import Database
from app.store.rows import api_keys_table


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    project: str
    name: str | None
    prefix: str
    rpm: int | None
    tpm: int | None
    created_at: float
    revoked_at: float | None


_COLUMNS = (
    api_keys_table.c.id,
    api_keys_table.c.project,
    api_keys_table.c.name,
    api_keys_table.c.prefix,
    api_keys_table.c.rpm,
    api_keys_table.c.tpm,
    api_keys_table.c.created_at,
    api_keys_table.c.revoked_at,
)


class KeyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def insert_key(self, key: StoredKey, key_hash: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                insert(api_keys_table),
                {
                    "id": key.id,
                    "project": key.project,
                    "name": key.name,
                    "prefix": key.prefix,
                    "hash": key_hash,
                    "rpm": key.rpm,
                    "tpm": key.tpm,
                    "created_at": key.created_at,
                    "revoked_at": key.revoked_at,
                },
            )

    async def find_by_hash(self, key_hash: str) -> StoredKey | None:
        """The key with this hash, revoked or not; None if there is none."""
        async with self._db.transaction() as tx:
            row = (
                await tx.execute(select(*_COLUMNS).where(api_keys_table.c.hash == key_hash))
            ).first()
        return StoredKey(*row) if row is not None else None

    async def list_keys(self, project: str | None = None) -> list[StoredKey]:
        query = select(*_COLUMNS).order_by(api_keys_table.c.created_at)
        if project is not None:
            query = query.where(api_keys_table.c.project == project)
        async with self._db.transaction() as tx:
            return [StoredKey(*row) for row in (await tx.execute(query)).all()]

    async def revoke(self, key_id: str) -> StoredKey | None:
        """Mark the key revoked (idempotent; the first revocation time stays). None if unknown."""
        async with self._db.transaction() as tx:
            await tx.execute(
                update(api_keys_table)
                .where(api_keys_table.c.id == key_id, api_keys_table.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            row = (await tx.execute(select(*_COLUMNS).where(api_keys_table.c.id == key_id))).first()
        return StoredKey(*row) if row is not None else None

    async def count_keys(self) -> int:
        """Keys ever created, revoked ones included: revoking the last key must not reopen the
        gateway to anyone."""
        async with self._db.transaction() as tx:
            return int(
                (await tx.execute(select(func.count()).select_from(api_keys_table))).scalar_one()
            )
