"""The response lifecycle: resolve the model, assemble the context, then generate in the
foreground (plain or streamed) or hand the job to the background queue; and retrieve, delete,
list and cancel what is stored.

Every step that can refuse a create request runs in `prepare`, before the upstream is called,
so bad input costs no tokens and leaves no row behind. Every lookup is scoped to the caller's
project: another project's id answers exactly like an id that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from app.backends.base import GenerationRequest, Usage
from app.backends.registry import Registry, Route
from app.core import compaction
from app.core.background import BackgroundRunner
from app.core.conversations import conversation_id_of, conversation_not_found
from app.core.events import TERMINAL_EVENTS, Event, EventLadder
from app.core.generation import (
    TERMINAL_STATUSES,
    Context,
    Prepared,
    failure_code,
    response_body,
    run_generation,
)
from app.core.items import check_unique_ids, resolve_items, user_text_item
from app.core.requests import (
    check_context_source,
    check_file_urls,
    check_request,
    dropped_tools,
    generation_request,
)
from app.core.session import LocalContexts
from app.core.tokens import count_tokens, fit_generation, reaches
from app.errors import (
    BadRequestError,
    GatewayError,
    NotFoundError,
    UpstreamError,
    missing_or_malformed,
)
from app.schemas.requests import CompactionTriggerItem, CreateResponseRequest
from app.schemas.responses import error_object, list_object, render_response
from app.store.contexts import StoredItem
from app.store.conversations import ConversationStore
from app.store.database import Database
from app.store.events import EventStore
from app.store.jobs import RUNNING, ClaimedJob, JobStore, new_job
from app.store.responses import NewResponse, ResponseStore, StoredResponse

log = logging.getLogger(__name__)

# How long a cancel waits for the worker running the job to store its final state, before it
# ends the job itself.
CANCEL_WAIT_SECONDS = 10.0
# Followers of a stream re-read the database at least this often (notifications are hints).
FOLLOW_POLL_SECONDS = 1.0


class ResponsesService:
    def __init__(
        self, database: Database, registry: Registry, runner: BackgroundRunner | None = None
    ) -> None:
        """`runner`: this process's background worker, if it runs one; a job enqueued while it
        has a free slot is handed to it rather than queued (`BackgroundRunner.reserve`)."""
        self._db = database
        self._runner = runner
        self._store = ResponseStore(database)
        self._jobs = JobStore(database)
        self._events = EventStore(database)
        self._conversations = ConversationStore(database)
        self._registry = registry

    # --- create ------------------------------------------------------------------------------

    async def prepare(
        self,
        request: CreateResponseRequest,
        project: str = "",
        key_id: str | None = None,
        *,
        summarize: bool = False,
        local: LocalContexts | None = None,
    ) -> Prepared:
        """Every check that can refuse the request, before any upstream call or any byte sent.
        `summarize`: the generation asks for a summary of the context (`compaction`). `local`:
        the contexts a WebSocket connection keeps of its own recent responses, where a
        `previous_response_id` is looked up first (`store: false` ones exist only there)."""
        route = self._resolve(request.model)
        request, compacting, forwarded = _split_trigger(request, route)
        check_request(request, route.backend, route.config.hosted_tools)
        # A plain create checks that a cached previous response still exists while the
        # upstream answers, not before: one database round trip less on the path of every turn.
        context = await self._assemble(
            request, project, defer_check=not (request.stream or request.background), local=local
        )
        check_file_urls(
            context.items,
            route.backend,
            request.model,
            len(context.items) - len(context.history),
            context.history,
        )
        hosted_tools = route.config.hosted_tools
        dropped = dropped_tools(request, route.backend, hosted_tools)
        if dropped:
            log.info(
                "dropped hosted tools %s: model %s cannot run them (hosted_tools: drop)",
                ", ".join(dropped),
                route.config.name,
            )
        generation = generation_request(
            request,
            route.upstream_model,
            context.items,
            dropped,
            hosted_items=hosted_tools != "drop",
        )
        if forwarded:
            _check_something_to_compact(context)
            generation.items = [*generation.items, compaction.TRIGGER]
            if request.context_management:
                generation.native["context_management"] = _context_management(request)
            context = _retained_context(context)
            return self._prepared(request, route, context, generation, project, key_id, dropped)
        if request.context_management and compacting is None and not summarize:
            compacted = self._server_compaction(request, route, context.items, dropped, generation)
            if compacted is not None:  # the context reached the threshold
                route, generation = compacted
                return self._prepared(request, route, context, generation, project, key_id, dropped)
        if compacting is not None or summarize:
            _check_something_to_compact(context)
            # Fitted with the summary's prompt and room for its answer: a compaction is asked
            # for when the context is full, and its request is `truncation: "auto"` (oldest
            # items out, not a 400).
            unsummarized: GenerationRequest | None = generation
            generation = compaction.summary_request(generation)
            window = route.config.context_window
            if window is not None and request.max_output_tokens is None:
                room = min(window // 4, compaction.SUMMARY_TOKENS)
                request = request.model_copy(update={"max_output_tokens": room})
                generation.max_output_tokens = room
        fit_generation(route, request, generation)
        if compacting is not None:
            route = Route(route.config, compaction.CompactingBackend(route.backend))
            context = _retained_context(context)
        prepared = self._prepared(request, route, context, generation, project, key_id, dropped)
        if summarize and _compacts_itself(route):
            prepared.unsummarized = unsummarized
        return prepared

    @staticmethod
    def _prepared(
        request: CreateResponseRequest,
        route: Route,
        context: Context,
        generation: GenerationRequest,
        project: str,
        key_id: str | None,
        dropped: list[str],
    ) -> Prepared:
        return Prepared(
            request,
            route,
            context,
            generation,
            project,
            conversation_id=conversation_id_of(request),
            key_id=key_id,
            dropped_tools=dropped,
        )

    def _server_compaction(
        self,
        request: CreateResponseRequest,
        route: Route,
        items: list[dict[str, Any]],
        dropped: list[str],
        generation: GenerationRequest,
    ) -> tuple[Route, GenerationRequest] | None:
        """`context_management`: on OpenAI or Azure, passed on (OpenAI compacts, with its own
        items); elsewhere, once the context the model would see reaches the threshold, the
        route and request of a summary first, then the answer (`compaction.CompactThenAnswer`);
        below it, None (an ordinary generation)."""
        threshold = compaction.compaction_threshold(request, route.config.context_window)
        config = route.config
        if _compacts_itself(route):
            generation.native["context_management"] = _context_management(request)
            return None
        if threshold is None or not reaches(
            route.upstream_model,
            request.instructions,
            generation.items,
            generation.tools,
            threshold,
        ):
            return None
        hosted_items = route.config.hosted_tools != "drop"

        def answer(item: dict[str, Any]) -> GenerationRequest:
            follow = generation_request(
                request, route.upstream_model, [*items, item], dropped, hosted_items=hosted_items
            )
            try:
                fit_generation(route, request, follow)
            except BadRequestError as exc:
                raise UpstreamError(
                    f"The context was compacted but still does not fit: {exc.message}"
                ) from None
            return follow

        summary = compaction.summary_request(generation)
        # The summary is fitted as a compaction's is: oldest items out rather than a 400 (a
        # Responses upstream truncates itself), and its own room to answer, not the limit the
        # client set for its answer (the request itself, stored and echoed, is left as sent).
        window = config.context_window
        summary.max_output_tokens = min(window // 4, compaction.SUMMARY_TOKENS) if window else None
        summary.native = {**generation.native, "truncation": "auto"}
        fitting = request.model_copy(
            update={"truncation": "auto", "max_output_tokens": summary.max_output_tokens}
        )
        fit_generation(route, fitting, summary)
        return Route(route.config, compaction.CompactThenAnswer(route.backend, answer)), summary

    async def count_input_tokens(
        self, request: CreateResponseRequest, project: str = ""
    ) -> dict[str, Any]:
        """`POST /v1/responses/input_tokens`: the tokens the same create body would send."""
        route = self._resolve(request.model)
        request, _, _ = _split_trigger(request, route)  # counts what it compacts
        check_context_source(request)
        context = await self._assemble(request, project)
        generation = generation_request(request, route.upstream_model, context.items)
        # A local server's own count wins (its tokenizer and chat template: gpt-oss on vLLM
        # frames messages unlike OpenAI's API); without one, OpenAI's families are counted
        # exactly here and other models estimated.
        count = await route.backend.count_tokens(generation)
        if count is None:
            count = count_tokens(
                route.upstream_model, request.instructions, generation.items, generation.tools
            )
        return {"object": "response.input_tokens", "input_tokens": count}

    async def prepare_compaction(
        self, request: CreateResponseRequest, project: str = "", key_id: str | None = None
    ) -> Prepared:
        """`POST /v1/responses/compact`, checked: the context its body names (input, a
        previous response, a conversation), on the model's route. The compact body has no
        tools or output format: any sent are not part of the summary call. Nothing is stored
        (`compact` stores nothing)."""
        if not isinstance(request.input, str):  # a trigger here asks for what this does
            kept = [item for item in request.input if not isinstance(item, CompactionTriggerItem)]
            request = request.model_copy(update={"input": kept})
        request = request.model_copy(
            update={**compaction.UNUSED_FIELDS, "stream": False, "background": False}
        )
        return await self.prepare(request, project, key_id, summarize=True)

    async def compact(self, prepared: Prepared) -> dict[str, Any]:
        """Summarize the prepared context: the `response.compaction` object. Nothing is
        stored."""
        check = self._check_previous(prepared)
        backend = prepared.route.backend
        try:
            own = None
            if prepared.unsummarized is not None:  # OpenAI's own, where the upstream is OpenAI
                own = await backend.compact(prepared.unsummarized)
            result = None if own is not None else await backend.generate(prepared.generation)
        except Exception:
            await _checked(check)  # a 404 for the previous response wins over other failures
            raise
        except BaseException:
            _abandon(check)
            raise
        await _checked(check)
        if own is not None:
            return compaction.upstream_compacted(
                prepared.id, prepared.created_at, prepared.context.items, own
            )
        assert result is not None
        return compaction.compacted_response(
            prepared.id, prepared.created_at, prepared.context.items, result
        )

    async def create(self, prepared: Prepared) -> dict[str, Any]:
        """Generate without streaming (the stored row is committed before this returns), or
        enqueue a background job and return the queued response at once."""
        if prepared.request.background:
            body, _ = await self._enqueue(prepared)
            return render_response(body, [])
        check = self._check_previous(prepared)
        try:
            result = await prepared.route.backend.generate(prepared.generation)
        except UpstreamError as exc:
            await _checked(check)
            if exc.status >= 500 and prepared.storing:
                error = error_object(failure_code(exc), exc.message)
                await self._insert(prepared, response_body(prepared, "failed", error=error), [])
                exc.message += f" The response was stored as failed: {prepared.id}."
            raise
        except Exception:
            await _checked(check)  # a 404 for the previous response wins over other failures
            raise
        except BaseException:
            _abandon(check)
            raise
        await _checked(check)
        body = response_body(
            prepared,
            result.status,
            result.usage,
            result.incomplete_reason,
            model=result.model,
            reported=result.reported,
        )
        await self._insert(prepared, body, result.output)
        return render_response(body, result.output)

    async def stand(self, prepared: Prepared) -> AsyncGenerator[Event, None]:
        """`generate: false` (WebSocket mode): the response stands on its context with no
        output and nothing asked of the upstream: stored `completed` (unless `store: false`),
        its id a later turn's `previous_response_id`. The events a stream opens and ends with."""
        ladder = EventLadder()
        opened = render_response(response_body(prepared, "in_progress"), [])
        yield ladder.event("response.created", response=opened)
        yield ladder.event("response.in_progress", response=opened)
        body = response_body(prepared, "completed", Usage())
        await self._insert(prepared, body, [])
        yield ladder.event("response.completed", response=render_response(body, []))

    def _check_previous(self, prepared: Prepared) -> asyncio.Task[None] | None:
        """The deferred check that a cached previous response still exists (a delete on
        another replica clears this one's cache through a notification, which may not have
        arrived yet), started alongside the upstream call."""
        previous = prepared.context.unverified
        if previous is None:
            return None

        async def check() -> None:
            if not await self._store.exists(previous, prepared.project):
                raise _previous_not_found(previous)

        return asyncio.get_running_loop().create_task(check())

    async def stream(self, prepared: Prepared) -> AsyncGenerator[Event, None]:
        """The event stream of a create request. In the foreground the generation runs inside
        this generator; if its consumer goes away (client disconnect) the upstream request is
        closed and the response stored `cancelled` with its partial output. A background
        request is enqueued before this returns, as `create` does, so its job exists whatever
        becomes of the stream (which may end before it starts, when the server is exiting); the
        stream only follows the events a worker persists, so a disconnect stops nothing.

        The foreground stream is `run_generation` itself, opening events and all, not a
        generator re-yielding it: every layer costs every event a hop."""
        if prepared.request.background:
            _, events = await self._enqueue(prepared)
            return self._background_stream(prepared, events)
        ladder = EventLadder()
        # Both opening events carry the same in-progress Response: rendered once.
        opened = render_response(response_body(prepared, "in_progress"), [])
        opening = [
            ladder.event("response.created", response=opened),
            ladder.event("response.in_progress", response=opened),
        ]
        return run_generation(prepared, ladder, _ForegroundSink(self, prepared), opening)

    async def _background_stream(
        self, prepared: Prepared, events: list[Event]
    ) -> AsyncGenerator[Event, None]:
        for event in events:
            yield event
        async for event in self.follow(
            prepared.id, prepared.project, events[-1]["sequence_number"]
        ):
            yield event

    async def _enqueue(self, prepared: Prepared) -> tuple[dict[str, Any], list[Event]]:
        """Store the queued response, its input and its job in one transaction; the job is
        announced to every replica's workers when it commits."""
        request = prepared.request
        body = response_body(prepared, "queued")
        events: list[Event] = []
        if request.stream:
            ladder = EventLadder()
            events = [
                ladder.event("response.created", response=render_response(body, [])),
                ladder.event("response.queued", response=render_response(body, [])),
            ]
        payload = request.model_dump(mode="json", by_alias=True, exclude_unset=True)
        payload.pop("input", None)  # stored as items
        runner = self._runner
        owner = runner.reserve() if runner is not None else None
        try:
            job = new_job(
                prepared.id,
                prepared.project,
                payload,
                key_id=prepared.key_id,
                owner=owner,
                lease_seconds=runner.lease_seconds if runner is not None else 0.0,
            )
            response = self._new_response(prepared, body, [])
            if owner is not None:
                response.status = "in_progress"  # stored as claimed; the reply still says queued
            await self._store.insert_response(
                response, job=job, events=events, conversation_id=prepared.conversation_id
            )
            claimed = ClaimedJob(
                prepared.id,
                prepared.project,
                attempts=1,
                request=payload,
                cancel_requested=False,
                key_id=prepared.key_id,
                created_at=job["created_at"],
                body=dict(body),
                stream=bool(request.stream),
                input=prepared.context.items,
                last_sequence=events[-1]["sequence_number"] if events else None,
            )
        except BaseException:
            # Not handed off. If a cancel interrupted a commit that went through anyway, the
            # job's lease expires unrenewed and a worker claims it then.
            if runner is not None and owner is not None:
                runner.unreserve()
            raise
        if runner is not None and owner is not None:
            runner.hand_off(claimed, prepared)
        return body, events

    def _new_response(
        self, prepared: Prepared, body: dict[str, Any], output: list[dict[str, Any]]
    ) -> NewResponse:
        return NewResponse(
            id=prepared.id,
            project=prepared.project,
            created_at=prepared.created_at,
            status=body["status"],
            model=body["model"],
            previous_response_id=prepared.request.previous_response_id,
            body=body,
            history_pks=[item.pk for item in prepared.context.history],
            input=prepared.context.entries,
            output=output,
            background=bool(prepared.request.background),
            stream=bool(prepared.request.stream),
            history=prepared.context.history,
            input_data=prepared.context.items[len(prepared.context.history) :],
            cache_epoch=prepared.context.cache_epoch,
        )

    async def _insert(
        self, prepared: Prepared, body: dict[str, Any], output: list[dict[str, Any]]
    ) -> None:
        if prepared.storing:
            await self._store.insert_response(
                self._new_response(prepared, body, output),
                conversation_id=prepared.conversation_id,
            )

    def _resolve(self, model: str) -> Route:
        route = self._registry.resolve(model)
        if route is None:
            raise NotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return route

    async def _assemble(
        self,
        request: CreateResponseRequest,
        project: str,
        *,
        defer_check: bool = False,
        local: LocalContexts | None = None,
    ) -> Context:
        epoch = self._store.cache_epoch()
        history: list[StoredItem] = []
        inherited: list[StoredItem | dict[str, Any]] = []
        unverified: str | None = None
        anchor: str | None = None
        previous = request.previous_response_id
        # A previous response this connection remembers (it may never have been stored): its
        # stored history, as long as the response that history belongs to exists, and its own
        # items, inherited as this request's input.
        remembered = local.get(previous) if local is not None and previous is not None else None
        if remembered is not None:
            anchor = remembered.anchor
            if anchor is not None and not await self._store.exists(anchor, project):
                raise _previous_not_found(str(previous))
            history, inherited = remembered.history, remembered.entries
            if remembered.epoch != epoch:  # a delete since: what went with it is left out
                history, inherited = await self._still_stored(history, inherited)
        elif previous is not None:
            loaded = await self._store.load_context(previous, project, unverified=defer_check)
            if loaded is None:
                raise _previous_not_found(previous)
            history, cached = loaded
            unverified = previous if cached else None
            anchor = previous
        conversation_id = conversation_id_of(request)
        if conversation_id is not None:
            turns = await self._conversations.context(conversation_id, project)
            if turns is None:
                raise conversation_not_found(conversation_id, "conversation")
            history = turns
        raw = request.input
        entries: list[StoredItem | dict[str, Any]]
        if isinstance(raw, str):
            # One item with an id made just now: nothing in the context can repeat it, so the
            # context's ids (2,000 at chain depth 1000) need no scan.
            entries = [user_text_item(raw)]
        else:
            # A closing `compaction_trigger` was taken off by `prepare`; `resolve_items` refuses
            # one anywhere else.
            entries = await resolve_items(
                self._store, list(raw), project, reuse=request.store is not False, param="input"
            )
            context_ids: Iterable[str] = (entry.data["id"] for entry in history)
            if inherited:
                context_ids = [
                    *context_ids,
                    *(e.data["id"] if isinstance(e, StoredItem) else e["id"] for e in inherited),
                ]
            check_unique_ids(context_ids, entries, "input")
        if inherited:
            entries = [*inherited, *entries]
        items: list[dict[str, Any]] = [entry.data for entry in history]
        items += [entry.data if isinstance(entry, StoredItem) else entry for entry in entries]
        return Context(
            history,
            [entry.pk if isinstance(entry, StoredItem) else entry for entry in entries],
            items,
            epoch,
            unverified,
            anchor,
        )

    async def _still_stored(
        self, history: list[StoredItem], entries: list[StoredItem | dict[str, Any]]
    ) -> tuple[list[StoredItem], list[StoredItem | dict[str, Any]]]:
        """A remembered context without the stored items deleted since (a deeper ancestor, a
        conversation), as a stored chain's context loses them."""
        pks = [item.pk for item in history]
        pks += [entry.pk for entry in entries if isinstance(entry, StoredItem)]
        kept = await self._store.stored_pks(pks)
        return [item for item in history if item.pk in kept], [
            entry for entry in entries if not isinstance(entry, StoredItem) or entry.pk in kept
        ]

    # --- retrieve, delete, list, cancel, follow -------------------------------------------------

    async def _stored(self, response_id: str, project: str) -> StoredResponse:
        stored = await self._store.get_response(response_id, project)
        if stored is None:
            raise _response_not_found(response_id)
        return stored

    async def retrieve(self, response_id: str, project: str = "") -> dict[str, Any]:
        stored = await self._stored(response_id, project)
        return render_response(stored.body, stored.output)

    async def replay(
        self, response_id: str, project: str, starting_after: int | None
    ) -> AsyncGenerator[Event, None]:
        """`GET …?stream=true`: a background stream's events after `starting_after`, then the
        live ones until the end. Checked before the first byte is sent."""
        stored = await self._stored(response_id, project)
        if not (stored.background and stored.stream):
            raise BadRequestError(
                "This response cannot be streamed: only responses created with "
                "background=true and stream=true can be streamed again.",
                param="stream",
            )
        after = -1 if starting_after is None else starting_after
        if (
            stored.status in TERMINAL_STATUSES
            and await self._events.last_sequence(response_id) is None
        ):
            raise BadRequestError(
                "The stream events of this response have expired; retrieve it without stream=true.",
                param="stream",
            )
        return self.follow(response_id, project, after)

    async def follow(
        self, response_id: str, project: str, after: int
    ) -> AsyncGenerator[Event, None]:
        """Persisted events after `after`, then live ones as a worker on any replica persists
        them, until the terminal event (or the response reaches a terminal status without one,
        as a cancelled response does). No gap, no duplicate: the cursor is the sequence number."""
        wake = asyncio.Event()

        def on_events(payload: str) -> None:
            if payload == response_id:
                wake.set()

        unsubscribe = self._db.listen("rg_events", on_events)
        try:
            cursor = after
            while True:
                wake.clear()
                events = await self._events.read_after(response_id, cursor)
                for event in events:
                    cursor = event["sequence_number"]
                    yield event
                    if event["type"] in TERMINAL_EVENTS:
                        return
                if events:
                    continue
                stored = await self._store.get_response(response_id, project)
                if stored is None:
                    return
                if stored.status in TERMINAL_STATUSES:
                    # Final state and events commit together: one more read drains them.
                    for event in await self._events.read_after(response_id, cursor):
                        yield event
                    return
                try:
                    await asyncio.wait_for(wake.wait(), FOLLOW_POLL_SECONDS)
                except TimeoutError:
                    pass
        finally:
            unsubscribe()

    async def cancel(self, response_id: str, project: str = "") -> dict[str, Any]:
        """Cancel a background response on any replica. Idempotent; a response that already
        finished is returned unchanged; a foreground response cannot be cancelled (400)."""
        stored = await self._stored(response_id, project)
        if not stored.background:
            raise BadRequestError("Cannot cancel a synchronous response.", param="response_id")
        if stored.status in TERMINAL_STATUSES:
            return render_response(stored.body, stored.output)
        before = await self._jobs.request_cancel(response_id, cancelled_body)
        if before == RUNNING:
            stored = await self._wait_terminal(response_id, project)
            if stored.status not in TERMINAL_STATUSES:
                # No worker answered: the process running the job has most likely died, and
                # its lease may be far from expiring. End the job here. A worker that is only
                # slow is fenced off (its lease no longer holds) and writes nothing more.
                await self._jobs.complete(
                    response_id, project, None, cancelled_body(stored.body), [], []
                )
                stored = await self._stored(response_id, project)
        else:
            stored = await self._stored(response_id, project)
        return render_response(stored.body, stored.output)

    async def _wait_terminal(self, response_id: str, project: str) -> StoredResponse:
        """Wait (bounded) until the worker running the job has stored its final state."""
        wake = asyncio.Event()
        unsubscribe = self._db.listen(
            "rg_events", lambda p: wake.set() if p == response_id else None
        )
        try:
            deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
            while True:
                wake.clear()
                stored = await self._stored(response_id, project)
                remaining = deadline - asyncio.get_running_loop().time()
                if stored.status in TERMINAL_STATUSES or remaining <= 0:
                    return stored
                try:
                    await asyncio.wait_for(wake.wait(), min(remaining, 0.25))
                except TimeoutError:
                    pass
        finally:
            unsubscribe()

    async def delete(self, response_id: str, project: str = "") -> dict[str, Any]:
        """Delete a response. An in-flight background response is cancelled first (its worker
        stops the upstream call; the deleted job fences off anything it would still write)."""
        stored = await self._stored(response_id, project)
        if stored.background and stored.status not in TERMINAL_STATUSES:
            await self._jobs.request_cancel(response_id, cancelled_body)
        if not await self._store.delete_response(response_id, project):
            raise _response_not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def list_input_items(
        self, response_id: str, *, limit: int, order: str, after: str | None, project: str = ""
    ) -> dict[str, Any]:
        listed = await self._store.list_input_items(response_id, project)
        if listed is None:
            raise _response_not_found(response_id)
        # Each id once, where it first appears: a context stored before repeats were refused
        # (`check_unique_ids`) may hold one twice, and `after` must name a single position.
        seen: set[str] = set()
        items = []
        for item in listed:
            if item["id"] not in seen:
                seen.add(item["id"])
                items.append(item)
        if order == "desc":
            items.reverse()
        start = 0
        if after is not None:
            position = next((i for i, item in enumerate(items) if item["id"] == after), None)
            if position is None:
                raise NotFoundError(
                    f"Item with id '{after}' is not an input item of response '{response_id}'.",
                    param="after",
                )
            start = position + 1
        page = items[start : start + limit]
        return list_object(page, has_more=start + limit < len(items))


class _ForegroundSink:
    """A foreground request stores its response once, when it ends."""

    def __init__(self, service: ResponsesService, prepared: Prepared) -> None:
        self._service = service
        self._prepared = prepared

    async def finish(
        self, body: dict[str, Any], output: list[dict[str, Any]], events: list[Event]
    ) -> None:
        await self._service._insert(self._prepared, body, output)

    async def interrupted(self, ladder: EventLadder) -> None:
        body = response_body(self._prepared, "cancelled")
        await self._service._insert(self._prepared, body, ladder.snapshot_output())


def _compacts_itself(route: Route) -> bool:
    """The route's model compacts with its upstream's own items (`Backend.native_compaction`:
    OpenAI, Azure's v1 API; `context_management`, `compaction_trigger`, `/responses/compact`),
    with no fallback elsewhere, which could not read them, and keeps hosted items
    (`hosted_tools: drop` would leave them out of the next turn)."""
    return route.backend.native_compaction and route.config.hosted_tools != "drop"


def _split_trigger(
    request: CreateResponseRequest, route: Route
) -> tuple[CreateResponseRequest, CreateResponseRequest | None, bool]:
    """A create whose input ends in `compaction_trigger`, for `route`: the request to prepare,
    the gateway's compaction of it (`compaction.without_trigger`: no tools, no format) or None,
    and whether the trigger goes on to the upstream instead (`_compacts_itself`: the request
    as sent, the trigger held back to close the context). Without a trigger: (request, None,
    False). The trigger's refusals (background, conversation) apply either way."""
    compacting = compaction.without_trigger(request)
    if compacting is None:
        return request, None, False
    if _compacts_itself(route):
        assert not isinstance(request.input, str)
        return request.model_copy(update={"input": request.input[:-1]}), None, True
    return compacting, compacting, False


def _context_management(request: CreateResponseRequest) -> list[dict[str, Any]]:
    return [
        entry.model_dump(mode="json", exclude_none=True)
        for entry in request.context_management or ()
    ]


def _check_something_to_compact(context: Context) -> None:
    if not context.items:
        raise BadRequestError(
            "There is nothing to compact: give a context (input items, or a "
            "'previous_response_id') before asking for its compaction.",
            param="input",
        )


def _retained_context(context: Context) -> Context:
    """What a compacted response (`compaction_trigger`) stands on once stored: the context's
    user messages (stored ones by reference), no inherited history. The next turn of its chain
    gets those and the compaction item, not what was compacted."""
    pairs: list[tuple[Any, dict[str, Any]]] = [(item.pk, item.data) for item in context.history]
    pairs += zip(context.entries, context.items[len(context.history) :], strict=True)
    # A server-side compaction's item before them stands for what precedes it.
    pairs = pairs[compaction.whole_index(context.items) + 1 :]
    kept = [(entry, data) for entry, data in pairs if compaction.is_user_message(data)]
    return Context(
        history=[],
        entries=[entry for entry, _ in kept],
        items=[data for _, data in kept],
        cache_epoch=context.cache_epoch,
        unverified=context.unverified,
        anchor=context.anchor,
    )


def cancelled_body(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "status": "cancelled", "completed_at": None}


def _response_not_found(response_id: str) -> GatewayError:
    return missing_or_malformed("Response", response_id, "resp", "response_id")


def _previous_not_found(response_id: str) -> GatewayError:
    return missing_or_malformed(
        "Previous response",
        response_id,
        "resp",
        "previous_response_id",
        code="previous_response_not_found",
    )


async def _checked(check: asyncio.Task[None] | None) -> None:
    """Wait for the deferred previous-response check: its 404 wins over whatever the upstream
    answered, and nothing is stored."""
    if check is not None:
        await check


def _abandon(check: asyncio.Task[None] | None) -> None:
    if check is None:
        return
    if check.done():
        if not check.cancelled():
            check.exception()  # retrieved: the request's own failure is what is raised
    else:
        check.cancel()
