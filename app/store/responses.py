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

from app.store.contexts import StoredItem
from app.store.database import Database, Transaction
from app.store.events import append_events, event_arguments
from app.store.items import APPENDED_STATUSES, append_to_conversation, insert_items
from app.store.rows import events_table, items_table, jobs_table, responses_table

# An input entry is either the pk of an item stored earlier (reused) or a new item to insert.
InputEntry = int | dict[str, Any]


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
    # For the context cache: the inherited items, and the data of each input entry in order.
    history: list[StoredItem] = field(default_factory=list)
    input_data: list[dict[str, Any]] = field(default_factory=list)
    # The cache's epoch when the request began reading (`ResponseStore.cache_epoch`); None
    # leaves the response out of the cache.
    cache_epoch: int | None = None


# PostgreSQL: the context a continuation starts from, in one statement. The pk lists come back
# as JSON text and the items as one JSON object {pk: item}, so Python decodes one document.
_LOAD_CONTEXT_SQL = """
SELECT r.history_pks::text, r.input_pks::text, r.output_pks::text,
       (SELECT coalesce(json_object_agg(i.pk, i.data), '{}'::json)::text
          FROM items AS i
         WHERE i.pk = ANY(ARRAY(
                 SELECT value::bigint FROM json_array_elements_text(r.history_pks)
                 UNION ALL SELECT value::bigint FROM json_array_elements_text(r.input_pks)
                 UNION ALL SELECT value::bigint FROM json_array_elements_text(r.output_pks))))
  FROM responses AS r
 WHERE r.id = $1 AND r.project = $2
"""

# PostgreSQL: a response and its new items, the part `_INSERT_RESPONSE_SQL` and `_ENQUEUE_SQL`
# share (parameters $1-$15, `_insert_arguments`). New items are inserted in their order, which
# assigns their pks in that order: PostgreSQL numbers the rows of INSERT … SELECT … ORDER BY as
# they come (the guarantee SQLAlchemy's `sort_by_parameter_order` relies on too), so ranking the
# returned pks gives each new item its position. $14 lists the input entries: a stored pk, or -k
# for the k-th new item; the new items after the first $15 are the output.
#
# The items' data travel as one JSON array ($5), encoded once; `json_array_elements` keeps each
# element's text as it was sent, and the `json` column stores that text as is. Their ids and
# types come separately ($3, $4), taken in Python, joined to the data by position: no operator
# may extract text from client content here (`->>`, `->`), since PostgreSQL cannot turn a JSON
# `\u0000` into text and fails the whole statement — JSON allows U+0000, and clients send it.
_RESPONSE_CTES = """
new_items AS (
    INSERT INTO items (id, response_id, project, type, data)
    SELECT i.id, $1::text, $2::text, i.type, d.value
      FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS i(id, type, n)
      JOIN json_array_elements($5::text::json) WITH ORDINALITY AS d(value, n) ON d.n = i.n
     ORDER BY i.n
    RETURNING pk
), numbered AS (
    SELECT pk, row_number() OVER (ORDER BY pk) AS n FROM new_items
), response AS (
    INSERT INTO responses (id, project, background, stream, created_at, status, model,
                           previous_response_id, body, history_pks, input_pks, output_pks)
    SELECT $1::text, $2::text, $6::boolean, $7::boolean, $8::bigint, $9::text, $10::text,
           $11::text, $12::text::json, $13::text::json,
           (SELECT coalesce(json_agg(coalesce(numbered.pk, t.v) ORDER BY t.o), '[]'::json)
              FROM unnest($14::bigint[]) WITH ORDINALITY AS t(v, o)
              LEFT JOIN numbered ON numbered.n = -t.v),
           (SELECT coalesce(json_agg(pk ORDER BY n), '[]'::json)
              FROM numbered WHERE n > $15::bigint)
    RETURNING id, input_pks, output_pks
)"""

# PostgreSQL: a response and its new items in one statement (so one implicit transaction,
# committed when it returns).
_INSERT_RESPONSE_SQL = f"""
WITH {_RESPONSE_CTES}
SELECT input_pks::text, output_pks::text FROM response
"""

# PostgreSQL: a background response enqueued in one statement — its new items and row as in
# `_INSERT_RESPONSE_SQL`, its job, its first stream events (sequence numbers and data as two
# arrays, as `event_arguments` builds them) and the notifications that wake the workers
# (and followers) of every replica. Autocommitted, so the job is durable before the caller
# acknowledges it, and the notifications go out exactly when it is visible. Referenced from the
# final SELECT, pg_notify runs once per inserted row. A job handed to the enqueuing process's
# own worker (inserted `running`, with its lease) wakes no worker.
_ENQUEUE_SQL = f"""
WITH {_RESPONSE_CTES}, job AS (
    INSERT INTO jobs (response_id, project, key_id, status, attempts, cancel_requested,
                      created_at, request, lease_owner, lease_expires_at)
    VALUES ($1::text, $2::text, $16::text, $17::text, $22::int, false, $18::float8,
            $19::text::json, $23::text, $24::float8)
), events AS (
    INSERT INTO response_events (response_id, sequence_number, data)
    SELECT $1::text, e.n, e.data::json
      FROM unnest($20::int[], $21::text[]) AS e(n, data)
)
SELECT CASE WHEN $17::text = 'queued' THEN pg_notify('rg_jobs', id) END,
       CASE WHEN cardinality($20::int[]) > 0 THEN pg_notify('rg_events', id) END
  FROM response
"""


def _insert_arguments(response: NewResponse) -> tuple[Any, ...]:
    """The 15 parameters of `_RESPONSE_CTES`."""
    new_items = [entry for entry in response.input if isinstance(entry, dict)]
    new_items += response.output
    # The input entries as one array: a stored item's pk, or -k for the k-th new item.
    template: list[int] = []
    fresh = 0
    for entry in response.input:
        if isinstance(entry, int):
            template.append(entry)
        else:
            fresh += 1
            template.append(-fresh)
    return (
        response.id,
        response.project,
        [item["id"] for item in new_items],
        [item["type"] for item in new_items],
        orjson.dumps(new_items).decode(),
        response.background,
        response.stream,
        response.created_at,
        response.status,
        response.model,
        response.previous_response_id,
        orjson.dumps(response.body).decode(),
        orjson.dumps(response.history_pks).decode(),
        template,
        fresh,
    )


class ResponseStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._postgres = database.postgres
        self._contexts = database.contexts  # one per process, shared by every store

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

    async def stored_pks(self, pks: Sequence[int]) -> set[int]:
        """Which of these items are still stored."""
        if not pks:
            return set()
        async with self._db.transaction() as connection:
            query = select(items_table.c.pk).where(self._pk_in(pks))
            return {pk for (pk,) in (await connection.execute(query)).all()}

    def cache_epoch(self) -> int:
        """Where the context cache stands: taken before a create reads anything, and handed
        back with the response to insert (`NewResponse.cache_epoch`), so that a delete that
        lands meanwhile keeps what was read out of the cache."""
        return self._contexts.epoch

    async def load_context(
        self, response_id: str, project: str, *, unverified: bool = False
    ) -> tuple[list[StoredItem], bool] | None:
        """The full ordered context a continuation of `response_id` starts from (its history,
        input and output), in two queries whatever the chain depth (one on PostgreSQL); None if
        it does not exist. The flag says whether it came from the context cache without the
        check that the response still exists, which `unverified` leaves to the caller (`exists`,
        run while the upstream answers): a cache hit otherwise costs that round trip first."""
        epoch = self._contexts.epoch
        cached = self._contexts.get(response_id, project)
        if cached is not None and unverified:
            return cached, True
        if cached is not None and await self.exists(response_id, project):
            return cached, False
        loaded = await self._load_context(response_id, project, epoch)
        return None if loaded is None else (loaded, False)

    async def _load_context(
        self, response_id: str, project: str, epoch: int
    ) -> list[StoredItem] | None:
        if self._postgres:
            loaded = await self._load_context_postgres(response_id, project)
            if loaded is not None:
                self._contexts.put(response_id, project, list(loaded), epoch)
            return loaded
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
        loaded = [StoredItem(pk, data[pk]) for pk in pks if pk in data]
        self._contexts.put(response_id, project, list(loaded), epoch)
        return loaded

    async def exists(self, response_id: str, project: str) -> bool:
        """Whether the response is stored (a context cache entry of one that is not is
        dropped)."""
        found = await self._exists(response_id, project)
        if not found:
            self._contexts.discard(response_id)
        return found

    async def _exists(self, response_id: str, project: str) -> bool:
        if self._postgres:
            async with self._db.driver() as connection:
                found = await connection.fetchval(
                    "SELECT 1 FROM responses WHERE id = $1 AND project = $2", response_id, project
                )
            return found is not None
        query = select(responses_table.c.id).where(
            responses_table.c.id == response_id, responses_table.c.project == project
        )
        async with self._db.transaction() as tx:
            return (await tx.execute(query)).first() is not None

    async def _load_context_postgres(
        self, response_id: str, project: str
    ) -> list[StoredItem] | None:
        """One statement, and one JSON document for all the items: decoding 2,000 items row by
        row (driver codec + SQLAlchemy result processing) cost 15-25 ms at chain depth 1000;
        one `orjson.loads` of the aggregate costs about 1 ms."""
        async with self._db.driver() as connection:
            row = await connection.fetchrow(_LOAD_CONTEXT_SQL, response_id, project)
        if row is None:
            return None
        history, inputs, outputs, items = row
        pks: list[int] = [*orjson.loads(history), *orjson.loads(inputs), *orjson.loads(outputs)]
        data: dict[str, dict[str, Any]] = orjson.loads(items)
        return [StoredItem(pk, data[str(pk)]) for pk in pks if str(pk) in data]

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
        if self._postgres and job is not None and response.status not in APPENDED_STATUSES:
            await self._enqueue_postgres(response, job, events or [])
            return
        if self._postgres and job is None and not events and conversation_id is None:
            await self._insert_response_postgres(response)
            return
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
                if job["status"] == "queued":  # a hand-off to this process's worker wakes none
                    await tx.notify("rg_jobs", response.id)
            await append_events(tx, response.id, events or [])
        if job is None:  # a queued response gets its output later, elsewhere
            self._remember(response, input_pks, output_pks)

    async def _insert_response_postgres(self, response: NewResponse) -> None:
        """Items and response row in one statement, committed on return: one round trip
        instead of four (BEGIN, two INSERTs, COMMIT), with no SQLAlchemy work on the way."""
        async with self._db.driver() as connection:
            row = await connection.fetchrow(_INSERT_RESPONSE_SQL, *_insert_arguments(response))
        self._remember(response, orjson.loads(row[0]), orjson.loads(row[1]))

    async def _enqueue_postgres(
        self, response: NewResponse, job: dict[str, Any], events: list[dict[str, Any]]
    ) -> None:
        """A queued response, its job and its first events in one autocommitted statement
        (was a BEGIN, four INSERTs, a pg_notify and a COMMIT through SQLAlchemy)."""
        async with self._db.driver() as connection:
            await connection.execute(
                _ENQUEUE_SQL,
                *_insert_arguments(response),
                job["key_id"],
                job["status"],
                job["created_at"],
                orjson.dumps(job["request"]).decode(),
                *event_arguments(events),
                job["attempts"],
                job["lease_owner"],
                job["lease_expires_at"],
            )

    def _remember(self, response: NewResponse, input_pks: list[int], output_pks: list[int]) -> None:
        if response.cache_epoch is None:
            return
        if len(response.input_data) != len(input_pks) or len(response.output) != len(output_pks):
            return
        items = list(response.history)
        items += map(StoredItem, input_pks, response.input_data)
        items += map(StoredItem, output_pks, response.output)
        self._contexts.put(response.id, response.project, items, response.cache_epoch)

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
        Returns False if it did not exist.

        The job row is locked first, as a background worker completing the job locks it
        (then the response): the same order, so a delete racing a completion waits instead of
        deadlocking."""
        async with self._db.transaction() as tx:
            owned = (
                await tx.execute(
                    select(responses_table.c.id).where(
                        responses_table.c.id == response_id, responses_table.c.project == project
                    )
                )
            ).first()
            if owned is None:
                return False
            for table in (jobs_table, events_table, responses_table):
                key = table.c.id if table is responses_table else table.c.response_id
                await tx.execute(delete(table).where(key == response_id))
            await tx.execute(delete(items_table).where(items_table.c.response_id == response_id))
            await tx.notify("rg_deletes", response_id)
        return True
