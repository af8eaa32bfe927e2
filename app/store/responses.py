"""Queries for stored responses and their items, named for their use.

SQLAlchemy Core on the hot path (no ORM unit of work): a create is one transaction with at most
two statements (items, then the response row), committed before the caller acknowledges it.
Driver errors are turned into `StorageError` here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import ColumnElement, any_, bindparam, delete, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import BigInteger

from app.store.database import Database, Transaction
from app.store.events import append_events
from app.store.items import APPENDED_STATUSES, append_to_conversation, insert_items
from app.store.rows import events_table, items_table, jobs_table, responses_table

# An input entry is either the pk of an item stored earlier (reused) or a new item to insert.
InputEntry = int | dict[str, Any]


@dataclass(slots=True)
class StoredItem:
    pk: int
    data: dict[str, Any]


@dataclass(slots=True)
class StoredResponse:
    body: dict[str, Any]
    output: list[dict[str, Any]]
    background: bool = False
    stream: bool = False
    input: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.body["status"])


@dataclass(slots=True)
class NewResponse:
    """A response to insert. `body` holds every wire field but `output`."""

    id: str
    project: str
    created_at: int
    status: str
    model: str
    previous_response_id: str | None
    body: dict[str, Any]
    history_pks: list[int]
    input: list[InputEntry]
    output: list[dict[str, Any]]
    background: bool = False
    stream: bool = False


class ResponseStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._postgres = database.postgres

    def _pk_in(self, pks: Sequence[int]) -> ColumnElement[bool]:
        """`items.pk IN (pks)` as one bound parameter, however long the list (no 32k-parameter
        limit, one cached statement)."""
        if self._postgres:
            return items_table.c.pk == any_(bindparam("pks", list(pks), type_=ARRAY(BigInteger)))
        values = func.json_each(bindparam("pks", orjson.dumps(list(pks)).decode())).table_valued(
            "value"
        )
        return items_table.c.pk.in_(select(values.c.value))

    async def _items_by_pk(
        self, connection: Transaction, pks: Sequence[int]
    ) -> dict[int, dict[str, Any]]:
        if not pks:
            return {}
        query = select(items_table.c.pk, items_table.c.data).where(self._pk_in(pks))
        return {pk: data for pk, data in (await connection.execute(query)).all()}

    async def load_context(self, response_id: str, project: str) -> list[StoredItem] | None:
        """The full ordered context a continuation of `response_id` starts from (its history,
        input and output), in two queries whatever the chain depth; None if it does not exist."""
        async with self._db.transaction() as connection:
            row = (
                await connection.execute(
                    select(
                        responses_table.c.history_pks,
                        responses_table.c.input_pks,
                        responses_table.c.output_pks,
                    ).where(
                        responses_table.c.id == response_id, responses_table.c.project == project
                    )
                )
            ).first()
            if row is None:
                return None
            pks = [*row.history_pks, *row.input_pks, *row.output_pks]
            data = await self._items_by_pk(connection, pks)
        return [StoredItem(pk, data[pk]) for pk in pks if pk in data]

    async def find_items(self, ids: Iterable[str], project: str) -> dict[str, list[StoredItem]]:
        """Stored items by public id (several rows may share one id)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        async with self._db.transaction() as connection:
            rows = await connection.execute(
                select(items_table.c.pk, items_table.c.id, items_table.c.data)
                .where(items_table.c.id.in_(wanted), items_table.c.project == project)
                .order_by(items_table.c.pk)
            )
            found: dict[str, list[StoredItem]] = {}
            for pk, item_id, data in rows.all():
                found.setdefault(item_id, []).append(StoredItem(pk, data))
        return found

    async def insert_response(
        self,
        response: NewResponse,
        job: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """Insert the response with its new items — and its background job and first stream
        events, if given — committed when this returns."""
        new_inputs = [entry for entry in response.input if isinstance(entry, dict)]
        async with self._db.transaction() as tx:
            pks = iter(
                await insert_items(tx, response.id, response.project, new_inputs + response.output)
            )
            input_pks = [entry if isinstance(entry, int) else next(pks) for entry in response.input]
            output_pks = list(pks)
            await tx.execute(
                insert(responses_table),
                {
                    "id": response.id,
                    "project": response.project,
                    "background": response.background,
                    "stream": response.stream,
                    "created_at": response.created_at,
                    "status": response.status,
                    "model": response.model,
                    "previous_response_id": response.previous_response_id,
                    "body": response.body,
                    "history_pks": response.history_pks,
                    "input_pks": input_pks,
                    "output_pks": output_pks,
                },
            )
            if conversation_id is not None and response.status in APPENDED_STATUSES:
                await append_to_conversation(tx, conversation_id, input_pks + output_pks)
            if job is not None:
                await tx.execute(insert(jobs_table), job)
                await tx.notify("rg_jobs", response.id)
            await append_events(tx, response.id, events or [])

    async def get_response(
        self, response_id: str, project: str, *, with_input: bool = False
    ) -> StoredResponse | None:
        """The stored response (and, with `with_input`, its input items: history then its own
        input, as a background worker needs them) in one transaction.

        The `status` column is authoritative over the body's copy: a worker that claims a job
        flips the column to `in_progress` in the claiming statement, without rewriting the body.
        """
        async with self._db.transaction() as tx:
            row = (
                await tx.execute(
                    select(
                        responses_table.c.body,
                        responses_table.c.status,
                        responses_table.c.output_pks,
                        responses_table.c.background,
                        responses_table.c.stream,
                        responses_table.c.history_pks,
                        responses_table.c.input_pks,
                    ).where(
                        responses_table.c.id == response_id, responses_table.c.project == project
                    )
                )
            ).first()
            if row is None:
                return None
            input_pks = [*row.history_pks, *row.input_pks] if with_input else []
            data = await self._items_by_pk(tx, [*row.output_pks, *input_pks])
        body = row.body if row.body["status"] == row.status else {**row.body, "status": row.status}
        return StoredResponse(
            body,
            [data[pk] for pk in row.output_pks if pk in data],
            row.background,
            row.stream,
            [data[pk] for pk in input_pks if pk in data],
        )

    async def list_input_items(self, response_id: str, project: str) -> list[dict[str, Any]] | None:
        """Every item used to generate the response (inherited context, then its own input),
        oldest first; None if the response does not exist."""
        async with self._db.transaction() as connection:
            row = (
                await connection.execute(
                    select(responses_table.c.history_pks, responses_table.c.input_pks).where(
                        responses_table.c.id == response_id, responses_table.c.project == project
                    )
                )
            ).first()
            if row is None:
                return None
            pks = [*row.history_pks, *row.input_pks]
            data = await self._items_by_pk(connection, pks)
        return [data[pk] for pk in pks if pk in data]

    async def delete_response(self, response_id: str, project: str) -> bool:
        """Delete the response, the items it created, its job and its stream events.
        Returns False if it did not exist."""
        async with self._db.transaction() as connection:
            result = await connection.execute(
                delete(responses_table).where(
                    responses_table.c.id == response_id, responses_table.c.project == project
                )
            )
            if result.rowcount == 0:
                return False
            for table in (items_table, jobs_table, events_table):
                await connection.execute(delete(table).where(table.c.response_id == response_id))
        return True
