"""The background worker each gateway runs (in its HTTP process, or in the child `worker`
process that `serve` starts: app/worker.py): claims queued jobs from the shared database,
generates under a renewed lease, persists stream events, and answers cancels.

Lifecycle of a job: `queued` (stored with its response) → claimed by any replica's worker →
`in_progress` → `completed` | `incomplete` | `failed` | `cancelled`. A worker that dies loses its
lease; another claims the job after the lease expires and generates again from the start, up to
`max_attempts`, after which the response is `failed` with a clear error. Nothing stays queued
or in progress forever.

Wake-ups are notifications (a queued job, a cancel), with polling as the fallback. A cancel
reaches the task running the job within milliseconds through the `rg_cancels` notification;
lease renewals also carry the cancel flag, in case a notification was missed.

A process that enqueues a job while its own worker has a free slot hands the job over instead
of queueing it (`reserve`, then `hand_off`): the job is inserted already claimed by this worker
(`running`, leased) and starts from what the request handler prepared. That spares every job a
notification, a claim statement and the rebuilding of its request; a job that finds no free
slot here is queued for any replica as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import secrets
import socket
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio

from app.backends.registry import Registry
from app.core.conversations import conversation_id_of
from app.core.events import Event, EventLadder
from app.core.generation import (
    Context,
    Prepared,
    failure_code,
    failure_events,
    response_body,
    run_generation,
)
from app.core.limits import RateLimiter
from app.core.requests import dropped_tools, generation_request
from app.core.tokens import fit_generation
from app.core.usage import UsageMeter
from app.errors import BadRequestError, GatewayError, StorageError
from app.schemas.requests import CreateResponseRequest
from app.schemas.responses import error_object, render_response
from app.store.database import Database
from app.store.events import EventStore
from app.store.jobs import ClaimedJob, JobStore
from app.store.responses import ResponseStore
from app.store.retention import RetentionStore

log = logging.getLogger(__name__)

# Persisted stream events are written in batches, at most this old.
FLUSH_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 16
    lease_seconds: float = 30.0
    max_attempts: int = 3
    poll_seconds: float = 1.0
    shutdown_grace_seconds: float = 30.0
    event_retention_seconds: float = 3600.0
    # Stored responses older than this are purged (0: kept forever); housekeeping runs this often.
    response_ttl_seconds: float = 0.0
    prune_seconds: float = 60.0


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    reason: str = ""  # "cancel" | "shutdown" | "lost"


class BackgroundRunner:
    def __init__(
        self,
        database: Database,
        registry: Registry,
        settings: WorkerSettings,
        usage: UsageMeter | None = None,
    ) -> None:
        self._db = database
        self._registry = registry
        self._settings = settings
        self._usage = usage
        self._retention = RetentionStore(database)
        self._limits = RateLimiter(database)
        self._jobs = JobStore(database)
        self._events = EventStore(database)
        self._responses = ResponseStore(database)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._running: dict[str, _Running] = {}
        # Slots promised to jobs this process is enqueueing itself (`reserve`).
        self._reserved = 0
        # Whether a claim might find a job: set by every `rg_jobs` notification, cleared by a
        # claim that found fewer jobs than it had room for and saw no notification meanwhile.
        # A finished job wakes the claim loop only while it is set; polling covers the rest.
        self._maybe_queued = True
        self._notified = 0
        self._wake = asyncio.Event()
        self._releasing: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Any] = []
        self._stopping = False

    # --- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        self._unsubscribe = [
            self._db.listen("rg_jobs", self._on_queued),
            self._db.listen("rg_cancels", self._on_cancel),
        ]
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
            asyncio.create_task(self._lease_loop(), name="jobs-lease"),
        ]

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish within the grace period; then release the
        rest to the other replicas (their attempt does not count)."""
        self._stopping = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._wake.set()
        tasks = [running.task for running in self._running.values()]
        if tasks:
            log.info(
                "waiting up to %ss for %d background jobs",
                self._settings.shutdown_grace_seconds,
                len(tasks),
            )
            await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_seconds)
        for running in list(self._running.values()):
            self._interrupt(running, "shutdown")
        remaining = [running.task for running in self._running.values()]
        if remaining:
            await asyncio.wait(remaining)
        if self._loops:
            # The claim loop ends by itself once it sees `_stopping` (a claim in flight then
            # gives its jobs back); cancelled only if the database keeps it longer.
            await asyncio.wait(self._loops[:1], timeout=5)
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with suppress(asyncio.CancelledError):
                await loop
        if self._releasing:  # jobs that came in while stopping, going back to the queue
            await asyncio.wait(list(self._releasing))

    # --- the loops ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        last_prune = last_sweep = 0.0
        while not self._stopping:
            self._wake.clear()
            failed = False
            try:
                free = self._settings.concurrency - len(self._running) - self._reserved
                if free > 0:
                    seen = self._notified
                    jobs = await self._jobs.claim(
                        self.owner,
                        free,
                        self._settings.lease_seconds,
                        self._settings.max_attempts,
                    )
                    if len(jobs) < free and self._notified == seen:
                        self._maybe_queued = False
                    self._start_claimed(jobs)
                # Jobs abandoned for good can only appear when a lease expires: no need to look
                # on every wake-up.
                if time.monotonic() - last_sweep > self._settings.lease_seconds / 2:
                    last_sweep = time.monotonic()
                    for response_id, project, attempts in await self._jobs.abandoned(
                        self._settings.max_attempts
                    ):
                        await self._fail_abandoned(response_id, project, attempts)
                if time.monotonic() - last_prune > self._settings.prune_seconds:
                    try:
                        await self._prune()
                    finally:
                        last_prune = time.monotonic()  # a period between prunes, however long
            except StorageError as exc:
                log.warning("background worker: %s", exc)
                failed = True
            # The housekeeping keeps its own period even when it is shorter than the poll's;
            # after a storage error, the next try waits a whole poll.
            timeout = self._settings.poll_seconds
            if not failed:
                until_prune = self._settings.prune_seconds - (time.monotonic() - last_prune)
                timeout = max(0.0, min(timeout, until_prune))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _start_claimed(self, jobs: list[ClaimedJob]) -> None:
        """Run what a claim returned. A claim in flight does not hold back hand-offs
        (`reserve`): if they took slots meanwhile, or the worker began stopping, the jobs
        beyond the slots left go back to the queue, in one statement that `stop` waits for."""
        room = self._settings.concurrency - len(self._running) - self._reserved
        room = 0 if self._stopping else max(0, room)
        for job in jobs[:room]:
            self._spawn(job)
        if jobs[room:]:
            self._release_later(*(job.response_id for job in jobs[room:]))

    def _release_later(self, *response_ids: str) -> None:
        task = asyncio.create_task(self._release(*response_ids))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, *response_ids: str) -> None:
        try:
            await self._jobs.release(self.owner, *response_ids)
        except StorageError as exc:
            # Their leases expire and another claim takes them (the attempt then counts).
            log.warning("background worker: giving jobs back to the queue failed: %s", exc)

    async def _prune(self) -> None:
        """Housekeeping every replica's worker does (each statement is idempotent): expired
        stream events, responses past their TTL, finished rate-limit windows."""
        await self._events.prune(self._settings.event_retention_seconds)
        if self._settings.response_ttl_seconds > 0:
            purged = await self._retention.purge_responses(
                time.time() - self._settings.response_ttl_seconds
            )
            if purged:
                log.info("retention: purged %d stored responses", purged)
        await self._limits.prune()

    async def _lease_loop(self) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                stop = await self._jobs.renew(
                    self.owner, list(self._running), self._settings.lease_seconds
                )
            except StorageError as exc:
                log.warning("background worker: lease renewal failed: %s", exc)
                continue
            for response_id in stop:
                running = self._running.get(response_id)
                if running is not None:
                    # Either a cancel was requested or the lease went to another worker.
                    self._interrupt(running, "cancel")

    def _on_queued(self, _payload: str) -> None:
        self._notified += 1
        self._maybe_queued = True
        self._wake.set()

    # --- jobs this process enqueues ----------------------------------------------------------

    @property
    def lease_seconds(self) -> float:
        return self._settings.lease_seconds

    def reserve(self) -> str | None:
        """A slot for a job the caller is about to enqueue, or None (no slot free, or
        stopping: queue it for any worker). With a slot, the caller inserts the job claimed by
        the returned owner and then calls `hand_off`, or `unreserve` if the insert failed."""
        taken = len(self._running) + self._reserved
        if self._stopping or taken >= self._settings.concurrency:
            return None
        self._reserved += 1
        return self.owner

    def unreserve(self) -> None:
        self._reserved -= 1
        if self._maybe_queued:
            self._wake.set()  # the slot is free for a queued job

    def hand_off(self, job: ClaimedJob, prepared: Prepared) -> None:
        """Run a job that was inserted claimed by this worker (`reserve`), from the caller's
        prepared request: no claim, no re-read, no re-validation."""
        self._reserved -= 1
        if self._stopping:
            # Enqueued while this worker was stopping: back to the queue for another worker
            # (the attempt does not count), as `stop` does with the jobs it interrupts.
            self._release_later(job.response_id)
            return
        self._spawn(job, prepared)

    def _on_cancel(self, response_id: str) -> None:
        running = self._running.get(response_id)
        if running is not None:
            self._interrupt(running, "cancel")

    def _interrupt(self, running: _Running, reason: str) -> None:
        if not running.reason:
            running.reason = reason
            running.task.cancel()

    def _spawn(self, job: ClaimedJob, prepared: Prepared | None = None) -> None:
        if self._usage is not None and job.created_at:
            self._usage.metrics.job_wait_seconds.observe(max(0.0, time.time() - job.created_at))
        # A context of its own: a job handed off by a request handler must not carry that
        # request's id into its logs.
        task = asyncio.create_task(
            self._execute(job, prepared),
            name=f"job-{job.response_id}",
            context=contextvars.Context(),
        )
        self._running[job.response_id] = _Running(task)
        task.add_done_callback(lambda _t: self._finished(job.response_id))

    def _finished(self, response_id: str) -> None:
        self._running.pop(response_id, None)
        if self._maybe_queued:
            self._wake.set()  # a slot is free for a queued job

    # --- one job -----------------------------------------------------------------------------

    async def _execute(self, job: ClaimedJob, prepared: Prepared | None) -> None:
        # The claim returned the response and its input: no re-read before generating.
        body = job.body
        try:
            if body is None:
                return  # deleted while queued
            try:
                await self._generate(job, body, prepared)
            except asyncio.CancelledError:
                # Cancelled before or after the generation loop's own handling: make sure the
                # job ends as the reason says (both calls are no-ops once the job is done).
                reason = self._running[job.response_id].reason
                with anyio.CancelScope(shield=True):
                    if reason == "shutdown":
                        await self._jobs.release(self.owner, job.response_id)
                    elif reason == "cancel":
                        await self._end_without_running(job, body, job.stream, False)
        except Exception:
            log.exception("background job %s crashed", job.response_id)

    async def _generate(
        self, job: ClaimedJob, stored_body: dict[str, Any], handed: Prepared | None
    ) -> None:
        items = job.input
        if handed is not None:  # prepared (and checked) by this process's request handler
            request, route, generation = handed.request, handed.route, handed.generation
        else:
            request = CreateResponseRequest.model_validate(job.request)
            resolved = self._registry.resolve(request.model)
            if job.cancel_requested or resolved is None:
                await self._end_without_running(job, stored_body, job.stream, resolved is None)
                return
            route = resolved
            hosted_tools = route.config.hosted_tools
            generation = generation_request(
                request,
                route.upstream_model,
                items,
                dropped_tools(request, route.backend, hosted_tools),
                hosted_items=hosted_tools != "drop",
            )
            try:
                fit_generation(route, request, generation)  # checked at enqueue; may shrink
            except BadRequestError as exc:
                await self._store_failure(
                    job.response_id, job.project, stored_body, job.stream, exc, self.owner
                )
                return
        prepared = Prepared(
            request,
            route,
            Context(history=[], entries=[], items=items),
            generation,
            project=job.project,
            conversation_id=conversation_id_of(request),
            id=job.response_id,
            created_at=stored_body["created_at"],
        )
        # A retried job continues the numbering of what earlier attempts persisted.
        last = job.last_sequence
        ladder = EventLadder(0 if last is None else last + 1)
        sink = _BackgroundSink(self, job, prepared, persist=job.stream)
        if not job.stream:  # its events are never read: no in_progress event, no flush task
            async for event in run_generation(prepared, ladder, sink):
                sink.add(event)
            return
        # The claim (or a hand-off's insert) already set the status column to in_progress; the
        # event goes out with the
        # first batch.
        body = response_body(prepared, "in_progress")
        sink.add(ladder.event("response.in_progress", response=render_response(body, [])))
        flusher = asyncio.create_task(sink.autoflush())
        try:
            async for event in run_generation(prepared, ladder, sink):
                sink.add(event)
        finally:
            flusher.cancel()
            with suppress(asyncio.CancelledError):
                await flusher

    async def _end_without_running(
        self, job: ClaimedJob, body: dict[str, Any], stream: bool, unroutable: bool
    ) -> None:
        if unroutable:
            error = GatewayError(
                f"The model '{body['model']}' is no longer configured on this gateway.",
                code="model_not_found",
            )
            await self._store_failure(job.response_id, job.project, body, stream, error, self.owner)
        else:
            cancelled = {**body, "status": "cancelled", "completed_at": None}
            await self._jobs.complete(
                job.response_id, job.project, self.owner, cancelled, [], [], stream=stream
            )

    async def _fail_abandoned(self, response_id: str, project: str, attempts: int) -> None:
        stored = await self._responses.get_response(response_id, project)
        if stored is None:
            return
        error = GatewayError(
            f"The background job was attempted {attempts} times and the process running it "
            "stopped each time; giving up.",
            code="server_error",
        )
        await self._store_failure(response_id, project, stored.body, stored.stream, error, None)

    async def _store_failure(
        self,
        response_id: str,
        project: str,
        body: dict[str, Any],
        stream: bool,
        error: GatewayError,
        owner: str | None,
    ) -> None:
        failed = {
            **body,
            "status": "failed",
            "completed_at": None,
            "error": error_object(failure_code(error), error.message),
        }
        events: list[Event] = []
        if stream:
            last = await self._events.last_sequence(response_id)
            events = failure_events(EventLadder(0 if last is None else last + 1), error, failed, [])
        await self._jobs.complete(response_id, project, owner, failed, [], events, stream=stream)


class _BackgroundSink:
    """Persists a running job's stream events in batches and stores its outcome under the
    lease; on interruption stores `cancelled` (a cancel) or gives the job back (shutdown)."""

    def __init__(
        self, runner: BackgroundRunner, job: ClaimedJob, prepared: Prepared, *, persist: bool
    ) -> None:
        self._runner = runner
        self._job = job
        self._prepared = prepared
        self._persist = persist
        self._buffer: list[Event] = []
        self._lock = asyncio.Lock()
        self._done = False
        self._started = time.perf_counter()
        self._ttft: float | None = None

    def add(self, event: Event) -> None:
        if self._ttft is None and event["type"].endswith(".delta"):
            self._ttft = time.perf_counter() - self._started
        if self._persist and not self._done:
            self._buffer.append(event)

    async def autoflush(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if self._buffer:
                await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer or self._done:
                return
            events, self._buffer = self._buffer, []
            if not await self._runner._jobs.record(
                self._job.response_id, self._runner.owner, events
            ):
                self._done = True  # lease lost: another worker owns the job now

    async def finish(
        self, body: dict[str, Any], output: list[dict[str, Any]], events: list[Event]
    ) -> None:
        async with self._lock:
            pending = self._buffer + events if self._persist else []
            self._buffer, self._done = [], True
            completed = await self._runner._jobs.complete(
                self._job.response_id,
                self._job.project,
                self._runner.owner,
                body,
                output,
                pending,
                self._prepared.conversation_id,
                stream=self._persist,
            )
        usage = self._runner._usage
        if completed and usage is not None:
            latency = time.perf_counter() - self._started
            usage.record_response(self._prepared, self._job.key_id, body, latency, self._ttft)

    async def interrupted(self, ladder: EventLadder) -> None:
        running = self._runner._running.get(self._job.response_id)
        reason = running.reason if running is not None else "cancel"
        if reason == "shutdown":
            await self._runner._jobs.release(self._runner.owner, self._job.response_id)
            return
        if reason == "lost":
            return
        # A stream that was followed closes what it opened: each item and content part gets
        # its done event, as incomplete (no terminal event: neither the SDK nor Open Responses
        # has one for `cancelled`; the stream ends once the status is stored).
        closing = ladder.close_all("incomplete")
        await self.finish(response_body(self._prepared, "cancelled"), ladder.output, closing)
