"""The durable job queue of background responses, on the database every replica shares.

A worker claims queued jobs — and running jobs whose lease expired, because the process that
held them died — in one statement: `UPDATE … WHERE response_id IN (SELECT … FOR UPDATE SKIP
LOCKED)` on PostgreSQL, so concurrent workers never claim the same job and never wait on each
other. On SQLite the single writer serializes the same statement. Every write a worker makes
about its job is fenced by `lease_owner`: a worker that lost its lease (it stalled past the
expiry and another worker took over) cannot complete, cancel or release the job any more, so a
job completes exactly once.

On PostgreSQL the per-job statements — the claim (with the response and its input, so the
worker reads nothing else), a batch of stream events, the completion, the lease renewal of every
running job — each run as one autocommitted statement on the raw asyncpg pool
(`Database.driver`): one round trip, no BEGIN/COMMIT, no SQLAlchemy work. With the one-statement
enqueue, a job went from 5.6–8.0 ms of gateway CPU to 1.7–2.5 ms (`bench/RESULTS.md`). A
completion that appends to a conversation, and everything on SQLite, keeps the SQLAlchemy
transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, update

from app.store.database import Database, Transaction
from app.store.events import EventStore, append_events, event_arguments
from app.store.items import APPENDED_STATUSES, append_to_conversation, insert_items
from app.store.responses import ResponseStore
from app.store.rows import jobs_table, responses_table

QUEUED, RUNNING, DONE = "queued", "running", "done"


@dataclass(slots=True)
class ClaimedJob:
    """A job a worker now holds, with everything it needs to run it: no re-read."""

    response_id: str
    project: str
    attempts: int
    request: dict[str, Any]
    cancel_requested: bool
    key_id: str | None = None
    created_at: float = 0.0
    # The stored response (status `in_progress`); None if it was deleted while queued.
    body: dict[str, Any] | None = None
    stream: bool = False
    # Its input items: inherited history, then its own input.
    input: list[dict[str, Any]] = field(default_factory=list)
    # The last persisted stream event of an earlier attempt (stream jobs only).
    last_sequence: int | None = None


# PostgreSQL: claim a batch in one statement, which also flips the responses to `in_progress`
# and returns each one's body, input items (one JSON document, as in `load_context`) and, for a
# retried stream job, where its event numbering continues.
_CLAIM_SQL = """
WITH claimed AS (
    UPDATE jobs AS j
       SET status = 'running', lease_owner = $1, lease_expires_at = $2, attempts = j.attempts + 1
     WHERE j.response_id IN (
           SELECT response_id FROM jobs
            WHERE (status = 'queued' OR (status = 'running' AND lease_expires_at < $3))
              AND attempts < $4
            ORDER BY created_at
            LIMIT $5
              FOR UPDATE SKIP LOCKED)
    RETURNING j.response_id, j.project, j.attempts, j.request, j.cancel_requested, j.key_id,
              j.created_at
), started AS (
    UPDATE responses AS r SET status = 'in_progress'
      FROM claimed AS c
     WHERE r.id = c.response_id
    RETURNING r.id, r.body, r.stream, r.history_pks, r.input_pks
)
SELECT c.response_id, c.project, c.attempts, c.request::text, c.cancel_requested, c.key_id,
       c.created_at, s.body::text, s.stream, s.history_pks::text, s.input_pks::text,
       (SELECT coalesce(json_object_agg(i.pk, i.data), '{}'::json)::text
          FROM items AS i
         WHERE s.id IS NOT NULL AND i.pk = ANY(ARRAY(
                 SELECT value::bigint FROM json_array_elements_text(s.history_pks)
                 UNION ALL SELECT value::bigint FROM json_array_elements_text(s.input_pks)))),
       CASE WHEN s.stream THEN (SELECT max(e.sequence_number) FROM response_events AS e
                                 WHERE e.response_id = c.response_id) END
  FROM claimed AS c
  LEFT JOIN started AS s ON s.id = c.response_id
 ORDER BY c.created_at
"""

# PostgreSQL: a job's final state in one statement, fenced by its lease: close the job, insert
# the output items (pks in order, as in `_INSERT_RESPONSE_SQL`), store the response, append the
# closing stream events and wake the waiters. Every write hangs off `closed`, so a worker that
# lost its lease writes nothing: `closed` is an UPDATE, so it locks the job row and, if a claim
# changed the row meanwhile, re-checks the fence on the claimed version (no FOR SHARE needed, as
# `_RECORD_SQL` needs; and a claim that comes second re-checks the row and finds it done).
# `updated` reads `closed` first, so the job row is locked before the response row, in the order
# a delete takes them. Only two kinds of waiter exist: followers
# of a stream ($12) and a cancel waiting for the final state (the flag is set before the cancel
# waits, and this UPDATE sees it, since it locks the row the cancel locked); other completions
# notify nobody, which spares every replica's LISTEN connection a message per job.
_COMPLETE_SQL = """
WITH closed AS (
    UPDATE jobs
       SET status = 'done', finished_at = $3, lease_owner = NULL, lease_expires_at = NULL
     WHERE response_id = $1 AND status <> 'done' AND ($2::text IS NULL OR lease_owner = $2::text)
    RETURNING response_id, cancel_requested
), new_items AS (
    INSERT INTO items (id, response_id, project, type, data)
    SELECT i.id, $1::text, $4::text, i.type, i.data::json
      FROM closed,
           unnest($5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS i(id, type, data, n)
     ORDER BY i.n
    RETURNING pk
), updated AS (
    UPDATE responses
       SET status = $8::text, body = $9::text::json,
           output_pks = (SELECT coalesce(json_agg(pk ORDER BY pk), '[]'::json) FROM new_items)
     WHERE id = $1 AND EXISTS (SELECT 1 FROM closed)
    RETURNING id
), events AS (
    INSERT INTO response_events (response_id, sequence_number, data)
    SELECT $1::text, e.n, e.data::json
      FROM closed, unnest($10::int[], $11::text[]) AS e(n, data)
)
SELECT CASE WHEN $12::boolean OR cancel_requested
            THEN pg_notify('rg_events', response_id) IS NULL ELSE true END
  FROM closed
"""

# PostgreSQL: a batch of a running job's stream events, only while the lease is held. The fence
# locks the job row (FOR SHARE) for the rest of the statement, as `_COMPLETE_SQL`'s UPDATE does:
# a plain read would let a worker whose lease just expired append events after another
# worker's claim (which locks the row FOR UPDATE SKIP LOCKED) had read where the numbering
# continues, and the new owner's next event would then collide on (response_id,
# sequence_number). Locked, either this statement commits first and the claim skips the row
# until it has, or the claim commits first and this statement, re-checking the locked row, finds
# another owner and writes nothing. Lock order: the job row, then event rows, never the response
# row — the order of a delete (job, events, response) and a completion (job, response).
_RECORD_SQL = """
WITH held AS (
    SELECT response_id FROM jobs
     WHERE response_id = $1 AND lease_owner = $2 AND status = 'running'
       FOR SHARE
), appended AS (
    INSERT INTO response_events (response_id, sequence_number, data)
    SELECT held.response_id, e.n, e.data::json
      FROM held, unnest($3::int[], $4::text[]) AS e(n, data)
)
SELECT pg_notify('rg_events', response_id) IS NULL FROM held
"""


def new_job(
    response_id: str,
    project: str,
    request: dict[str, Any],
    *,
    key_id: str | None = None,
    owner: str | None = None,
    lease_seconds: float = 0.0,
) -> dict[str, Any]:
    """The row that enqueues a background response (inserted with the response itself).

    With `owner`, the job is inserted already claimed: `running`, first attempt, leased to the
    worker of the process that enqueues it (a hand-off, see `BackgroundRunner.reserve`). From
    then on it is like any claimed job: if that process dies, the lease expires and another
    worker takes the job over."""
    now = time.time()
    claimed = owner is not None
    return {
        "response_id": response_id,
        "project": project,
        "key_id": key_id,
        "status": RUNNING if claimed else QUEUED,
        "attempts": 1 if claimed else 0,
        "cancel_requested": False,
        "created_at": now,
        "request": request,
        "lease_owner": owner,
        "lease_expires_at": now + lease_seconds if claimed else None,
    }


class JobStore:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._responses = ResponseStore(database)
        self._events = EventStore(database)

    async def announce(self) -> None:
        """Wake idle workers on every replica: a job was queued."""
        async with self._db.transaction() as tx:
            await tx.notify("rg_jobs", "")

    async def claim(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[ClaimedJob]:
        """Claim up to `limit` jobs (queued, or running with an expired lease, under the
        attempt limit), oldest first, each with what its worker needs to run it."""
        now = time.time()
        if self._db.postgres:
            async with self._db.driver() as connection:
                rows = await connection.fetch(
                    _CLAIM_SQL, owner, now + lease_seconds, now, max_attempts, limit
                )
                jobs = [_claimed(row) for row in rows]
                # A retried stream job: the claim read the last event as of its snapshot, and a
                # stale worker's events may have committed after it (before the row was locked;
                # see `_RECORD_SQL`). Read again now that the claim is committed: no event of an
                # earlier owner can come after this.
                for job in jobs:
                    if job.stream and job.attempts > 1:
                        job.last_sequence = await connection.fetchval(
                            "SELECT max(sequence_number) FROM response_events"
                            " WHERE response_id = $1",
                            job.response_id,
                        )
            return jobs
        claimable = (
            select(jobs_table.c.response_id)
            .where(
                or_(
                    jobs_table.c.status == QUEUED,
                    and_(jobs_table.c.status == RUNNING, jobs_table.c.lease_expires_at < now),
                ),
                jobs_table.c.attempts < max_attempts,
            )
            .order_by(jobs_table.c.created_at)
            .limit(limit)
        )
        if self._db.postgres:
            claimable = claimable.with_for_update(skip_locked=True)
        statement = (
            update(jobs_table)
            .where(jobs_table.c.response_id.in_(claimable.scalar_subquery()))
            .values(
                status=RUNNING,
                lease_owner=owner,
                lease_expires_at=now + lease_seconds,
                attempts=jobs_table.c.attempts + 1,
            )
            .returning(
                jobs_table.c.response_id,
                jobs_table.c.project,
                jobs_table.c.attempts,
                jobs_table.c.request,
                jobs_table.c.cancel_requested,
                jobs_table.c.key_id,
                jobs_table.c.created_at,
            )
        )
        async with self._db.transaction() as tx:
            rows = (await tx.execute(statement)).all()
            if rows:
                await tx.execute(
                    update(responses_table)
                    .where(responses_table.c.id.in_([row.response_id for row in rows]))
                    .values(status="in_progress")
                )
        # SQLite: one process, one writer; the reads that follow cost no round trips.
        jobs = [ClaimedJob(*row) for row in rows]
        for job in jobs:
            stored = await self._responses.get_response(
                job.response_id, job.project, with_input=True
            )
            if stored is not None:
                job.body, job.stream, job.input = stored.body, stored.stream, stored.input
                if stored.stream:
                    job.last_sequence = await self._events.last_sequence(job.response_id)
        return jobs

    async def abandoned(self, max_attempts: int) -> list[tuple[str, str, int]]:
        """Running jobs whose lease expired after their last allowed attempt."""
        async with self._db.transaction() as tx:
            rows = await tx.execute(
                select(jobs_table.c.response_id, jobs_table.c.project, jobs_table.c.attempts).where(
                    jobs_table.c.status == RUNNING,
                    jobs_table.c.lease_expires_at < time.time(),
                    jobs_table.c.attempts >= max_attempts,
                )
            )
            return [(rid, project, attempts) for rid, project, attempts in rows.all()]

    async def renew(self, owner: str, response_ids: list[str], lease_seconds: float) -> set[str]:
        """Extend the leases `owner` holds; returns the ids whose cancel was requested or whose
        lease was lost (the worker must stop those)."""
        if not response_ids:
            return set()
        if self._db.postgres:  # one statement for every job this process runs
            async with self._db.driver() as connection:
                renewed = await connection.fetch(
                    "UPDATE jobs SET lease_expires_at = $3"
                    " WHERE response_id = ANY($1::text[]) AND lease_owner = $2"
                    " AND status = 'running' RETURNING response_id, cancel_requested",
                    response_ids,
                    owner,
                    time.time() + lease_seconds,
                )
            held = {response_id: cancel for response_id, cancel in renewed}
            return {rid for rid in response_ids if rid not in held or held[rid]}
        async with self._db.transaction() as tx:
            rows = await tx.execute(
                update(jobs_table)
                .where(
                    jobs_table.c.response_id.in_(response_ids),
                    jobs_table.c.lease_owner == owner,
                    jobs_table.c.status == RUNNING,
                )
                .values(lease_expires_at=time.time() + lease_seconds)
                .returning(jobs_table.c.response_id, jobs_table.c.cancel_requested)
            )
            held = {response_id: cancel for response_id, cancel in rows.all()}
        return {rid for rid in response_ids if rid not in held or held[rid]}

    async def release(self, owner: str, *response_ids: str) -> None:
        """Give jobs back to the queue (graceful shutdown, a claim beyond the slots left): the
        attempt does not count, and their responses read `queued` again."""
        async with self._db.transaction() as tx:
            released = (
                (
                    await tx.execute(
                        update(jobs_table)
                        .where(
                            jobs_table.c.response_id.in_(response_ids),
                            jobs_table.c.lease_owner == owner,
                            jobs_table.c.status == RUNNING,
                        )
                        .values(
                            status=QUEUED,
                            lease_owner=None,
                            lease_expires_at=None,
                            attempts=jobs_table.c.attempts - 1,
                        )
                        .returning(jobs_table.c.response_id)
                    )
                )
                .scalars()
                .all()
            )
            if released:
                await tx.execute(
                    update(responses_table)
                    .where(
                        responses_table.c.id.in_(released),
                        responses_table.c.status == "in_progress",
                    )
                    .values(status="queued")
                )
                await tx.notify("rg_jobs", "")

    async def request_cancel(
        self, response_id: str, cancelled_body: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> str | None:
        """Cancel a background job. A queued job is cancelled here and now (its response gets
        `cancelled_body(body)`); a running one is flagged and its worker notified. Returns the
        job's status before the call, None if there is no job."""
        async with self._db.transaction() as tx:
            query = select(jobs_table.c.status).where(jobs_table.c.response_id == response_id)
            if self._db.postgres:
                query = query.with_for_update()
            status: str | None = (await tx.execute(query)).scalar_one_or_none()
            if status == QUEUED:
                await self._finish(tx, response_id, cancel=True)
                body = (
                    await tx.execute(
                        select(responses_table.c.body).where(responses_table.c.id == response_id)
                    )
                ).scalar_one()
                new_body = cancelled_body(body)
                await tx.execute(
                    update(responses_table)
                    .where(responses_table.c.id == response_id)
                    .values(status=new_body["status"], body=new_body)
                )
            elif status == RUNNING:
                await tx.execute(
                    update(jobs_table)
                    .where(jobs_table.c.response_id == response_id)
                    .values(cancel_requested=True)
                )
                await tx.notify("rg_cancels", response_id)
            return status

    @staticmethod
    async def _finish(tx: Transaction, response_id: str, *, cancel: bool = False) -> None:
        await tx.execute(
            update(jobs_table)
            .where(jobs_table.c.response_id == response_id)
            .values(
                status=DONE,
                finished_at=time.time(),
                lease_owner=None,
                lease_expires_at=None,
                cancel_requested=cancel,
            )
        )

    async def record(self, response_id: str, owner: str, events: list[dict[str, Any]]) -> bool:
        """Persist stream events of a running job, fenced by the lease. Returns False, writing
        nothing, if the lease was lost."""
        if self._db.postgres:
            async with self._db.driver() as connection:
                held = await connection.fetchval(
                    _RECORD_SQL, response_id, owner, *event_arguments(events)
                )
            return held is not None
        # SQLite: the fence is a write, not a read. The driver begins the transaction at the
        # first write only, so a SELECT fence would run outside it, and a claim could take the
        # job between the check and the insert; the UPDATE takes the database's write lock
        # until commit, which serializes this against every claim.
        async with self._db.transaction() as tx:
            held = await tx.execute(
                update(jobs_table)
                .where(
                    jobs_table.c.response_id == response_id,
                    jobs_table.c.lease_owner == owner,
                    jobs_table.c.status == RUNNING,
                )
                .values(lease_owner=owner)
            )
            if held.rowcount == 0:
                return False
            await append_events(tx, response_id, events)
        return True

    async def complete(
        self,
        response_id: str,
        project: str,
        owner: str | None,
        body: dict[str, Any],
        output: list[dict[str, Any]],
        events: list[dict[str, Any]],
        conversation_id: str | None = None,
        *,
        stream: bool = True,
    ) -> bool:
        """Store the final state of a background response and close its job (and append its
        turn to its conversation), in one
        transaction fenced by the lease (`owner` None: no lease needed, e.g. a job failed
        after its process died). Returns False, writing nothing, if the lease was lost.
        `stream`: the response was created with `stream: true`, so followers may wait."""
        if self._db.postgres and (
            conversation_id is None or body["status"] not in APPENDED_STATUSES
        ):
            async with self._db.driver() as connection:
                closed = await connection.fetchval(
                    _COMPLETE_SQL,
                    response_id,
                    owner,
                    time.time(),
                    project,
                    [item["id"] for item in output],
                    [item["type"] for item in output],
                    [orjson.dumps(item).decode() for item in output],
                    body["status"],
                    orjson.dumps(body).decode(),
                    *event_arguments(events),
                    stream,
                )
            return closed is not None
        async with self._db.transaction() as tx:
            fence = [jobs_table.c.response_id == response_id, jobs_table.c.status != DONE]
            if owner is not None:
                fence.append(jobs_table.c.lease_owner == owner)
            closed = await tx.execute(
                update(jobs_table)
                .where(*fence)
                .values(
                    status=DONE,
                    finished_at=time.time(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if closed.rowcount == 0:
                return False
            output_pks = await insert_items(tx, response_id, project, output)
            await tx.execute(
                update(responses_table)
                .where(responses_table.c.id == response_id)
                .values(status=body["status"], body=body, output_pks=output_pks)
            )
            if conversation_id is not None and body["status"] in APPENDED_STATUSES:
                input_pks = (
                    await tx.execute(
                        select(responses_table.c.input_pks).where(
                            responses_table.c.id == response_id
                        )
                    )
                ).scalar_one()
                await append_to_conversation(tx, conversation_id, input_pks + output_pks)
            await append_events(tx, response_id, events)
            if not events:  # waiters (a cancel, a follower) learn of the final state
                await tx.notify("rg_events", response_id)
        return True


def _claimed(row: Any) -> ClaimedJob:
    (rid, project, attempts, request, cancel, key_id, created_at) = row[:7]
    body, stream, history_pks, input_pks, items, last_sequence = row[7:]
    job = ClaimedJob(rid, project, attempts, orjson.loads(request), cancel, key_id, created_at)
    if body is not None:
        job.body = {**orjson.loads(body), "status": "in_progress"}
        job.stream = bool(stream)
        data: dict[str, dict[str, Any]] = orjson.loads(items)
        pks = [*orjson.loads(history_pks), *orjson.loads(input_pks)]
        job.input = [data[str(pk)] for pk in pks if str(pk) in data]
        job.last_sequence = last_sequence
    return job
