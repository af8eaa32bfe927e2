"""Alembic migrations on both databases: empty → head matches the code's tables, head → base
removes everything, and back up again."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.store.engine import create_engine, head_revision
from app.store.rows import Base
from tests.conftest import Database, migrate, run_sql


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


def test_upgrade_drops_repeated_conversation_items(empty_database: Database) -> None:
    """Older versions let a conversation hold an item twice; the upgrade keeps each id's first
    position, so listing and `after` pagination see every item once."""
    migrate(empty_database.url, to="0004")
    statements = [
        "INSERT INTO conversations (id, project, created_at, metadata, next_position) "
        "VALUES ('conv_a', '', 0, '{}', 6), ('conv_b', '', 0, '{}', 1)",
        "INSERT INTO items (pk, id, response_id, project, type, data) VALUES "
        + ", ".join(
            f"({pk}, '{item_id}', 'resp_x', '', 'message', '{{}}')"
            for pk, item_id in [(1, "msg_1"), (2, "msg_2"), (3, "msg_1"), (4, "msg_3")]
        ),
        # conv_a: msg_1, msg_2, msg_1 again (same row), msg_3, msg_1 (another row, same id)
        "INSERT INTO conversation_items (conversation_id, position, item_pk) VALUES "
        "('conv_a', 0, 1), ('conv_a', 1, 2), ('conv_a', 2, 1), ('conv_a', 4, 4), "
        "('conv_a', 5, 3), ('conv_b', 0, 1)",
    ]
    for statement in statements:
        run_sql(empty_database, statement)
    migrate(empty_database.url)
    rows = run_sql(
        empty_database,
        "SELECT conversation_id, position, item_pk FROM conversation_items "
        "ORDER BY conversation_id, position",
    )
    assert [tuple(row) for row in rows] == [
        ("conv_a", 0, 1),
        ("conv_a", 1, 2),
        ("conv_a", 4, 4),
        ("conv_b", 0, 1),
    ]
