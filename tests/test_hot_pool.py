"""The hot path's connection pool (`app.store.database.HotPool`) on a real PostgreSQL: reuse,
the bound and its queue of waiters, cancelled waiters, connections it must not reuse, idle
expiry, close; and, through `Database.driver`, a statement cancelled in the middle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.errors import StorageError
from app.store import database as database_module
from app.store.database import Database as GatewayDatabase
from app.store.database import HotPool, asyncpg_url
from app.store.engine import create_engine
from tests.conftest import Database, new_database


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    for database in new_database("postgres", tmp_path):
        yield asyncpg_url(database.url)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


async def backend_pid(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT pg_backend_pid()"))


async def open_backends(url: str) -> int:
    """Connections the server has open to this test's database, this query's own left out."""
    probe = await asyncpg.connect(url)
    try:
        return int(
            await probe.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await probe.close()


async def settles_at(url: str, expected: int) -> bool:
    """Whether the server's count of this database's sessions reaches `expected` within 5 s (a
    terminated session takes a moment to leave `pg_stat_activity`)."""
    for _ in range(100):
        if await open_backends(url) == expected:
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_returned_connection_is_reused_and_only_as_many_are_opened_as_are_used(
    pg_url: str,
) -> None:
    async def test() -> None:
        pool = HotPool(pg_url, 4)
        first = await pool.acquire()
        pid = await backend_pid(first)
        pool.release(first)
        again = await pool.acquire()
        assert await backend_pid(again) == pid  # the same server session, not a new one
        pool.release(again)
        assert await open_backends(pg_url) == 1
        await pool.close()

    run(test)


def test_past_the_bound_callers_wait_and_are_served_in_order(pg_url: str) -> None:
    async def test() -> None:
        pool = HotPool(pg_url, 2)
        held = [await pool.acquire(), await pool.acquire()]
        served: list[int] = []

        async def waiter(index: int) -> None:
            connection = await pool.acquire()
            served.append(index)
            pool.release(connection)

        waiters = [asyncio.create_task(waiter(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        assert served == []  # all three wait: the pool is at its bound
        pool.release(held.pop())
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        assert served == [0, 1, 2]
        assert await open_backends(pg_url) == 2
        pool.release(held.pop())
        await pool.close()

    run(test)


def test_a_cancelled_waiter_loses_no_connection(pg_url: str) -> None:
    async def test() -> None:
        pool = HotPool(pg_url, 1)
        held = await pool.acquire()
        gone = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.02)
        gone.cancel()
        # Handed over in the same turn as the cancel: the connection must come back.
        pool.release(held)
        with pytest.raises(asyncio.CancelledError):
            await gone
        connection = await asyncio.wait_for(pool.acquire(), 2)
        assert await connection.fetchval("SELECT 1") == 1
        pool.release(connection)
        await pool.close()

    run(test)


def test_connections_it_must_not_reuse_are_dropped_and_replaced(pg_url: str) -> None:
    async def test() -> None:
        pool = HotPool(pg_url, 1)
        seen: set[int] = set()
        # Interrupted in the middle of a statement.
        connection = await pool.acquire()
        seen.add(await backend_pid(connection))
        pool.release(connection, reusable=False)
        # Left in a transaction.
        connection = await pool.acquire()
        pid = await backend_pid(connection)
        assert pid not in seen
        seen.add(pid)
        await connection.execute("BEGIN")
        pool.release(connection)
        # Closed by the server.
        connection = await pool.acquire()
        pid = await backend_pid(connection)
        assert pid not in seen
        seen.add(pid)
        killer = await asyncpg.connect(pg_url)
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
        await killer.close()
        with pytest.raises(database_module._DRIVER_ERRORS):
            await connection.fetchval("SELECT 1")
        pool.release(connection)
        # Still one slot, and it works.
        connection = await asyncio.wait_for(pool.acquire(), 5)
        assert await backend_pid(connection) not in seen
        pool.release(connection)
        await pool.close()

    run(test)


def test_a_dropped_connection_lets_a_waiter_open_another(pg_url: str) -> None:
    async def test() -> None:
        pool = HotPool(pg_url, 1)
        held = await pool.acquire()
        waiting = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.02)
        pool.release(held, reusable=False)
        connection = await asyncio.wait_for(waiting, 5)
        assert await connection.fetchval("SELECT 1") == 1
        pool.release(connection)
        await pool.close()

    run(test)


def test_a_connection_idle_too_long_is_closed_not_reused(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "IDLE_SECONDS", 0.05)

    async def test() -> None:
        pool = HotPool(pg_url, 2)
        connection = await pool.acquire()
        pid = await backend_pid(connection)
        pool.release(connection)
        await asyncio.sleep(0.1)
        connection = await pool.acquire()
        assert await backend_pid(connection) != pid
        pool.release(connection)
        assert await settles_at(pg_url, 1)  # the stale one is gone
        await pool.close()

    run(test)


def test_close_closes_idle_connections_and_fails_waiters(pg_url: str) -> None:
    async def test() -> None:
        pool = HotPool(pg_url, 2)
        idle = await pool.acquire()
        held = await pool.acquire()
        pool.release(idle)
        await pool.close()
        assert idle.is_closed()
        pool.release(held)  # in use at close: closed as it comes back
        for _ in range(100):
            if held.is_closed():
                break
            await asyncio.sleep(0.02)
        assert held.is_closed()
        with pytest.raises(asyncpg.InterfaceError):
            await pool.acquire()
        assert await settles_at(pg_url, 0)

        full = HotPool(pg_url, 1)
        held = await full.acquire()
        waiting = asyncio.create_task(full.acquire())
        await asyncio.sleep(0.02)
        await full.close()
        with pytest.raises(asyncpg.InterfaceError):
            await waiting
        full.release(held)

    run(test)


def test_through_the_database_a_refused_statement_keeps_the_connection_a_cancelled_one_drops_it(
    tmp_path: Path,
) -> None:
    for database in new_database("postgres", tmp_path):
        asyncio.run(_driver_errors(database))


async def _driver_errors(database: Database) -> None:
    engine = create_engine(database.url, 2)
    db = GatewayDatabase(engine, listen_url=asyncpg_url(database.url))
    await db.start()
    try:
        async with db.driver() as connection:
            pid = await backend_pid(connection)
        with pytest.raises(StorageError):
            async with db.driver() as connection:
                await connection.execute("SELECT 1 / 0")  # refused by the server
        async with db.driver() as connection:
            assert await backend_pid(connection) == pid  # kept

        async def sleeper() -> None:
            async with db.driver() as connection:
                await connection.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.driver() as connection:
            assert await backend_pid(connection) != pid  # dropped, not reused mid-statement
            assert await connection.fetchval("SELECT 1") == 1
        # ...and the statement stopped on the server, rather than sleeping on for 30 s.
        url = asyncpg_url(database.url)
        probe = await asyncpg.connect(url)
        try:
            for _ in range(100):
                sleeping = await probe.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
                    "AND pid <> pg_backend_pid() AND datname = current_database()"
                )
                if sleeping == 0:
                    break
                await asyncio.sleep(0.05)
            assert sleeping == 0
        finally:
            await probe.close()
    finally:
        await db.stop()
        await engine.dispose()
