"""The database handle every store shares: the engine, transactions that map driver errors to
ours, and cross-process notifications.

Notifications wake other replicas without polling: a queued job (`jobs`), a cancel request
(`cancels`), new stream events of a response (`events`), stored responses deleted or purged
(`deletes`: every replica drops its context cache). On PostgreSQL they are LISTEN/NOTIFY:
sent inside the writing transaction, so they are delivered exactly when its rows are visible.
On SQLite (one process) they are delivered in-process right after the commit. Either way a
listener must treat them as hints and re-read the database: a notification can be missed (a
listener connection that dropped), so waiters also poll on a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import BadRequestError, GatewayError, StorageError
from app.store.contexts import ContextCache

log = logging.getLogger(__name__)

CHANNELS = ("rg_jobs", "rg_cancels", "rg_events", "rg_deletes")
# Connections of the hot-path pool (`Database.driver`), at most, per process.
HOT_POOL_SIZE = 32
# A pooled connection idle longer than this is closed rather than reused (as asyncpg's pool
# does by default): a firewall or proxy on the way may have dropped it silently.
IDLE_SECONDS = 300.0
Listener = Callable[[str], None]


# What PostgreSQL refuses to hold in a text value: U+0000 (in content it travels JSON-escaped
# and is kept; in an id, which is a text column, it cannot be). The client's fault, not ours.
_UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


def storage_error(exc: BaseException) -> GatewayError:
    """A driver error as ours: a 400 for a value the database cannot store, else a 500 that
    names the error's kind only (never the statement or its parameters)."""
    cause: BaseException | None = exc
    for _ in range(8):  # SQLAlchemy wraps asyncpg's error (orig, then __cause__)
        if cause is None:
            break
        if isinstance(cause, _UNSTORABLE_TEXT):
            return BadRequestError(
                "The request holds a character that cannot be stored: U+0000 (NUL) is not "
                "allowed in ids.",
                code="invalid_value",
            )
        cause = getattr(cause, "orig", None) or cause.__cause__
    named = getattr(exc, "orig", None) or exc
    return StorageError(f"The database failed: {type(named).__name__}.")


class Transaction:
    """A connection inside `Database.transaction()`, with notifications that go out on commit."""

    def __init__(self, connection: AsyncConnection, database: Database) -> None:
        self.connection = connection
        self._database = database
        self.pending: list[tuple[str, str]] = []

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return await self.connection.execute(statement, parameters)

    async def notify(self, channel: str, payload: str) -> None:
        """Announce `payload` on `channel` when the transaction commits: to this process's
        listeners at once, and on PostgreSQL to every replica's (this one's again, later — the
        listeners are idempotent). At once matters for `rg_deletes`: a continuation served
        here right after a delete must not find the deleted turn in the context cache while
        the notification is still on its way back."""
        if self._database.postgres:
            await self.connection.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": channel, "payload": payload},
            )
        self.pending.append((channel, payload))


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        listen_url: str | None = None,
        context_cache_items: int = 0,
    ) -> None:
        self.engine = engine
        self.contexts = ContextCache(context_cache_items)
        self._listeners: dict[str, list[Listener]] = defaultdict(list)
        # A delete or purge on any replica may remove items that cached contexts of later turns
        # hold: every one of them empties this process's cache (this process's own deletes too,
        # delivered locally after their commit).
        self.listen("rg_deletes", lambda _payload: self.contexts.clear())
        self.postgres = engine.dialect.name == "postgresql"
        self._listen_url = listen_url
        self._connection: asyncpg.Connection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._pool: HotPool | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        tx: Transaction | None = None
        try:
            async with self.engine.begin() as connection:
                tx = Transaction(connection, self)
                yield tx
        except SQLAlchemyError as exc:
            raise storage_error(exc) from exc
        for channel, payload in tx.pending if tx is not None else ():
            self._dispatch(channel, payload)

    def driver(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """An asyncpg connection outside any transaction (PostgreSQL only). Each statement on
        it commits when it returns, in one round trip: no BEGIN, no COMMIT, no SQLAlchemy
        compile or row processing. For the hot paths that are a single statement (a create, a
        context load); asyncpg caches their prepared statements per connection.

        They come from a pool of plain asyncpg connections (opened by `start`): checking a
        connection out of SQLAlchemy's pool and back costs more CPU than the statement."""
        if self._pool is not None:
            return _Pooled(self._pool)
        return self._engine_driver()

    @asynccontextmanager
    async def _engine_driver(self) -> AsyncIterator[asyncpg.Connection]:
        """`driver` before `start` (or without a LISTEN URL): SQLAlchemy's pool."""
        try:
            async with self.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                try:
                    yield raw.driver_connection
                except asyncpg.PostgresError:
                    raise  # the server refused a statement; the connection is fine
                except BaseException:
                    # Broken, or cancelled in the middle of a statement: never reuse it.
                    await connection.invalidate()
                    raise
        except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise storage_error(exc) from exc

    # --- notifications -----------------------------------------------------------------------

    def listen(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call `listener(payload)` for every notification on `channel`; returns an unsubscribe."""
        self._listeners[channel].append(listener)
        return lambda: self._listeners[channel].remove(listener)

    def _dispatch(self, channel: str, payload: str) -> None:
        for listener in list(self._listeners.get(channel, ())):
            try:
                listener(payload)
            except Exception:  # a listener's bug must not break the others
                log.exception("notification listener failed")

    async def start(self) -> None:
        """Open the LISTEN connection and the hot-path pool (PostgreSQL only)."""
        if self.postgres and self._listen_url is not None:
            self._supervisor = asyncio.create_task(self._supervise(), name="pg-listen")
            self._pool = HotPool(self._listen_url, HOT_POOL_SIZE)

    async def _connect(self) -> None:
        assert self._listen_url is not None
        connection = await asyncpg.connect(self._listen_url)
        for channel in CHANNELS:
            await connection.add_listener(channel, self._on_notification)
        self._connection = connection

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._dispatch(channel, payload)

    async def _supervise(self) -> None:
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    await self._connect()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection failed (%s); retrying", exc)
            await asyncio.sleep(2)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with suppress(asyncio.CancelledError):
                await self._supervisor
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()


class HotPool:
    """The hot path's asyncpg connections, opened on demand up to `max_size`, reused last-in
    first-out, handed to waiters first-come first-served.

    asyncpg's own `Pool` costs 25–50 µs of CPU per checkout and return on the benchmark machine
    (an `asyncio.Queue`, a holder per connection, an inactivity timer rescheduled at every
    return, a shielded task per release, a reset round trip unless switched off); this is a
    list of idle connections and a queue of waiters. What it keeps of `Pool`: no session state
    is reset because `driver` users leave none (autocommitted statements: no transaction,
    LISTEN or SET); a connection that is closed, in a transaction, ended by the server, or was
    interrupted in the middle of a statement is never reused — the interrupted one is closed in
    the background, which first lets asyncpg's cancel request reach the server (the statement
    stops there rather than running on), and keeps its slot until then; an idle one is closed
    after `IDLE_SECONDS`.
    """

    __slots__ = ("_url", "_max", "_idle", "_size", "_waiters", "_closed", "_retiring")

    def __init__(self, url: str, max_size: int) -> None:
        self._url = url
        self._max = max_size
        self._idle: list[tuple[asyncpg.Connection, float]] = []  # with when each came back
        self._size = 0  # connections open or being opened, idle or in use
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._closed = False
        self._retiring: set[asyncio.Task[None]] = set()

    async def acquire(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the connection pool is closed")
            while self._idle:
                connection, since = self._idle.pop()
                if connection.is_closed() or time.monotonic() - since > IDLE_SECONDS:
                    self._drop(connection)
                    continue
                return connection
            if self._size < self._max:
                self._size += 1
                try:
                    return await asyncpg.connect(self._url)
                except BaseException:
                    self._size -= 1
                    self._wake(None)  # the slot is free again: a waiter may try
                    raise
            waiter: asyncio.Future[asyncpg.Connection | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiters.append(waiter)
            try:
                connection = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection (or a free slot) and cancelled before taking it.
                    handed = waiter.result()
                    if handed is not None:
                        self.release(handed)
                    else:
                        self._wake(None)
                else:
                    with suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
            if connection is not None:
                return connection
            # None: a connection was dropped, so one may be opened: go round again.

    def release(self, connection: asyncpg.Connection, *, reusable: bool = True) -> None:
        if connection.is_closed():
            self._drop(connection)
        elif not reusable or self._closed or connection.is_in_transaction():
            self._retire(connection)
        elif not self._wake(connection):
            now = time.monotonic()
            self._idle.append((connection, now))
            # The oldest idle connections are at the bottom, where a last-in first-out pool
            # under a lighter load never reaches: close them from there.
            while now - self._idle[0][1] > IDLE_SECONDS:
                self._drop(self._idle.pop(0)[0])

    def _retire(self, connection: asyncpg.Connection) -> None:
        """Close a connection that is still open, in the background; its slot stays taken until
        it is closed."""

        async def close() -> None:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except BaseException:
                connection.terminate()
                raise
            finally:
                self._size -= 1
                self._wake(None)

        task = asyncio.get_running_loop().create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a database connection closed uncleanly: %r", task.exception())

    def _wake(self, connection: asyncpg.Connection | None) -> bool:
        """Hand `connection` (or, with None, a free slot) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False

    def _drop(self, connection: asyncpg.Connection) -> None:
        """Let go of a connection that is closed or idle (no statement running on it)."""
        self._size -= 1
        connection.terminate()
        self._wake(None)

    async def close(self) -> None:
        """Close the idle connections; those in use are closed as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the connection pool is closed"))
        self._waiters.clear()
        for connection, _since in idle:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                connection.terminate()
        if self._retiring:
            await asyncio.wait(list(self._retiring))


class _Pooled:
    """`async with pool.acquire()` with driver errors as ours. A class rather than an
    `asynccontextmanager`: it is on every hot path, and a generator-based one costs a
    generator, its first-iteration hook and two more frames per use."""

    __slots__ = ("_connection", "_pool")

    def __init__(self, pool: HotPool) -> None:
        self._pool = pool
        self._connection: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._connection = await self._pool.acquire()
        except _DRIVER_ERRORS as exc:
            raise storage_error(exc) from exc
        return self._connection

    async def __aexit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        # A statement the server refused leaves the connection as it was; anything else (a
        # broken connection, a cancel in the middle of a statement, the server ending the
        # session) retires it.
        self._pool.release(
            self._connection,
            reusable=exc is None
            or (isinstance(exc, asyncpg.PostgresError) and not _session_ended(exc)),
        )
        if isinstance(exc, _DRIVER_ERRORS):
            raise storage_error(exc) from exc


# InternalClientError: what asyncpg may raise for a statement on a session the server has just
# ended (its protocol finds itself mid-way through another state).
# TimeoutError: asyncpg's connect timeout (and a statement timeout, if one is ever set).
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def _session_ended(exc: asyncpg.PostgresError) -> bool:
    """An error after which the server's session is gone or going: an operator intervention
    (SQLSTATE class 57P: shutdown, crash, terminated) or a connection exception (class 08)."""
    state = str(getattr(exc, "sqlstate", "") or "")
    return state.startswith(("57P", "08"))


def asyncpg_url(database_url: str) -> str:
    """The plain libpq URL asyncpg.connect takes, from our SQLAlchemy URL."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
