"""The durable job queue of background responses, on the database every replica shares.

A worker claims queued jobs — and running jobs whose lease expired, because the process that
held them died — in one statement: `UPDATE … WHERE response_id IN (SELECT … FOR UPDATE SKIP
LOCKED)` on PostgreSQL, so concurrent workers never claim the same job and never wait on each
other. On SQLite the single writer serializes the same statement. Every write a worker makes
about its job is fenced by `lease_owner`: a worker that lost its lease (it stalled past the
expiry and another worker took over) cannot complete, cancel or release the job any more, so a
job completes exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update

from app.store.database import Database, Transaction
from app.store.events import append_events
from app.store.items import APPENDED_STATUSES, append_to_conversation, insert_items
from app.store.rows import jobs_table, responses_table

QUEUED, RUNNING, DONE = "queued", "running", "done"


@dataclass(slots=True)
class ClaimedJob:
    response_id: str
    project: str
    attempts: int
    request: dict[str, Any]
    cancel_requested: bool
    key_id: str | None = None
    created_at: float = 0.0


def new_job(
    response_id: str, project: str, request: dict[str, Any], *, key_id: str | None = None
) -> dict[str, Any]:
    """The row that enqueues a background response (inserted with the response itself)."""
    return {
        "response_id": response_id,
        "project": project,
        "key_id": key_id,
        "status": QUEUED,
        "attempts": 0,
        "cancel_requested": False,
        "created_at": time.time(),
        "request": request,
    }


class JobStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def announce(self) -> None:
        """Wake idle workers on every replica: a job was queued."""
        async with self._db.transaction() as tx:
            await tx.notify("rg_jobs", "")

    async def claim(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[ClaimedJob]:
        now = time.time()
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
        return [ClaimedJob(*row) for row in rows]

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

    async def release(self, owner: str, response_id: str) -> None:
        """Give a job back to the queue (graceful shutdown); the attempt does not count."""
        async with self._db.transaction() as tx:
            await tx.execute(
                update(jobs_table)
                .where(
                    jobs_table.c.response_id == response_id,
                    jobs_table.c.lease_owner == owner,
                    jobs_table.c.status == RUNNING,
                )
                .values(
                    status=QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=jobs_table.c.attempts - 1,
                )
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
        async with self._db.transaction() as tx:
            held = await tx.execute(
                select(jobs_table.c.response_id).where(
                    jobs_table.c.response_id == response_id,
                    jobs_table.c.lease_owner == owner,
                    jobs_table.c.status == RUNNING,
                )
            )
            if held.first() is None:
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
    ) -> bool:
        """Store the final state of a background response and close its job (and append its
        turn to its conversation), in one
        transaction fenced by the lease (`owner` None: no lease needed, e.g. a job failed
        after its process died). Returns False, writing nothing, if the lease was lost."""
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
