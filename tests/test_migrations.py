"""Alembic migrations on both databases: empty → head matches the code's tables, head → base
removes everything, and back up again."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.store.engine import create_engine, head_revision
from app.store.rows import Base
from tests.conftest import Database, migrate


def inspect(url: str) -> tuple[set[str], list[object], str | None]:
    async def run() -> tuple[set[str], list[object], str | None]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:

                def read(sync: sa.Connection) -> tuple[set[str], list[object], str | None]:
                    context = MigrationContext.configure(sync, opts={"compare_type": True})
                    tables = set(sa.inspect(sync).get_table_names())
                    diff = compare_metadata(context, Base.metadata)
                    return tables, diff, context.get_current_revision()

                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_downgrade_round_trip(empty_database: Database) -> None:
    migrate(empty_database.url)
    tables, diff, revision = inspect(empty_database.url)
    assert {"responses", "items", "alembic_version"} <= tables
    assert diff == [], f"models and migrations disagree: {diff}"
    assert revision == head_revision()

    migrate(empty_database.url, to="base")
    tables, _, revision = inspect(empty_database.url)
    assert tables <= {"alembic_version"} and revision is None

    migrate(empty_database.url)
    assert inspect(empty_database.url)[2] == head_revision()
