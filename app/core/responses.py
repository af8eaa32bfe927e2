"""The response lifecycle: resolve the model, assemble the context, generate, store, render.

`create` reads top-down as the steps it takes. Every step that can refuse the request does so
before the upstream is called, so bad input costs no tokens and leaves no row behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio

from app.backends.base import Finish, GenerationRequest, Usage
from app.backends.registry import Registry, Route
from app.core.events import Event, EventLadder
from app.core.items import ConcreteItem, canonical_item, check_item
from app.core.requests import check_request, echo_tools, generation_request
from app.errors import GatewayError, NotFoundError, StorageError, UpstreamError
from app.ids import new_id
from app.schemas.requests import CreateResponseRequest, ItemReference, MessageItem
from app.schemas.responses import error_object, list_object, render_response, usage_object
from app.store.responses import InputEntry, NewResponse, ResponseStore, StoredItem

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Context:
    """The input of one generation: inherited history, then this request's own entries."""

    history: list[StoredItem]
    entries: list[InputEntry]
    items: list[dict[str, Any]]  # what the backend sees: history + input, in order


@dataclass(slots=True)
class Prepared:
    """A create request that passed every check and is ready to generate."""

    request: CreateResponseRequest
    route: Route
    context: Context
    generation: GenerationRequest
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def storing(self) -> bool:
        return self.request.store is not False


class ResponsesService:
    def __init__(self, store: ResponseStore, registry: Registry) -> None:
        self._store = store
        self._registry = registry

    # --- create ------------------------------------------------------------------------------

    async def prepare(self, request: CreateResponseRequest) -> Prepared:
        """Every check that can refuse the request, before any upstream call or any byte sent."""
        route = self._resolve(request.model)
        check_request(request, route.backend)
        context = await self._assemble(request)
        generation = generation_request(request, route.upstream_model, context.items)
        return Prepared(request, route, context, generation)

    async def create(self, prepared: Prepared) -> dict[str, Any]:
        """Generate without streaming; the stored row is committed before this returns."""
        try:
            result = await prepared.route.backend.generate(prepared.generation)
        except UpstreamError as exc:
            if exc.status >= 500 and prepared.storing:
                error = error_object("server_error", exc.message)
                await self._save(prepared, self._body(prepared, "failed", error=error), [])
                exc.message += f" The response was stored as failed: {prepared.id}."
            raise
        body = self._body(
            prepared, result.status, result.usage, result.incomplete_reason, model=result.model
        )
        await self._save(prepared, body, result.output)
        return render_response(body, result.output)

    async def stream(self, prepared: Prepared) -> AsyncGenerator[Event, None]:
        """Generate while streaming the event ladder. Exactly one terminal event ends it, sent
        after the stored row is committed. If the consumer goes away (client disconnect), the
        upstream request is closed and the response is stored as `cancelled` with its partial
        output."""
        ladder = EventLadder()
        body = self._body(prepared, "in_progress")
        yield ladder.event("response.created", response=render_response(body, []))
        yield ladder.event("response.in_progress", response=render_response(body, []))
        deltas = prepared.route.backend.stream(prepared.generation)
        try:
            async for delta in deltas:
                for event in ladder.feed(delta):
                    yield event
            finish = ladder.finish or Finish()
            status = "incomplete" if finish.incomplete_reason else "completed"
            for event in ladder.close_all(status):
                yield event
            body = self._body(
                prepared, status, finish.usage, finish.incomplete_reason, model=finish.model
            )
            await self._save(prepared, body, ladder.output)
            yield ladder.event(f"response.{status}", response=render_response(body, ladder.output))
        except (UpstreamError, StorageError) as exc:
            async for event in self._fail_stream(prepared, ladder, exc):
                yield event
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            with anyio.CancelScope(shield=True):
                await deltas.aclose()
                output = ladder.snapshot_output()
                await self._save(prepared, self._body(prepared, "cancelled"), output)
            raise
        finally:
            await deltas.aclose()

    async def _fail_stream(
        self, prepared: Prepared, ladder: EventLadder, exc: GatewayError
    ) -> AsyncGenerator[Event, None]:
        for event in ladder.close_all("incomplete"):
            yield event
        error = error_object("server_error", exc.message)
        body = self._body(prepared, "failed", error=error)
        if not isinstance(exc, StorageError):
            try:
                await self._save(prepared, body, ladder.output)
            except StorageError as storage:
                log.error("could not store failed response %s: %s", prepared.id, storage)
        yield ladder.event(
            "error",
            code=exc.code,
            message=exc.message,
            param=exc.param,
            error={"type": exc.type, "code": exc.code, "message": exc.message, "param": exc.param},
        )
        yield ladder.event("response.failed", response=render_response(body, ladder.output))

    def _resolve(self, model: str) -> Route:
        route = self._registry.resolve(model)
        if route is None:
            raise NotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return route

    async def _assemble(self, request: CreateResponseRequest) -> Context:
        history: list[StoredItem] = []
        if request.previous_response_id is not None:
            loaded = await self._store.load_context(request.previous_response_id)
            if loaded is None:
                raise NotFoundError(
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = loaded
        raw = request.input
        parsed = [] if isinstance(raw, str) else list(raw)
        for index, item in enumerate(parsed):
            check_item(item, index)
        if isinstance(raw, str):
            canonical: list[dict[str, Any] | ItemReference] = [canonical_item(_user_message(raw))]
        else:
            canonical = [
                item if isinstance(item, ItemReference) else canonical_item(item) for item in parsed
            ]
        # Only ids the client chose can name stored items; ids we just minted cannot.
        client_ids = {item.id for item in parsed if not isinstance(item, ItemReference) and item.id}
        entries = await self._reuse_stored(
            canonical, client_ids if request.store is not False else set()
        )
        items = [entry.data for entry in history]
        items += [entry.data if isinstance(entry, StoredItem) else entry for entry in entries]
        return Context(
            history,
            [entry.pk if isinstance(entry, StoredItem) else entry for entry in entries],
            items,
        )

    async def _reuse_stored(
        self, items: list[dict[str, Any] | ItemReference], replayed: set[str]
    ) -> list[StoredItem | dict[str, Any]]:
        """Resolve item references, and point replayed items at the row already stored for them
        (same id, same content) instead of storing them twice."""
        references = {item.id for item in items if isinstance(item, ItemReference)}
        stored = await self._store.find_items(references | replayed)
        resolved: list[StoredItem | dict[str, Any]] = []
        for index, item in enumerate(items):
            candidates = stored.get(item.id if isinstance(item, ItemReference) else item["id"], [])
            if isinstance(item, ItemReference):
                if not candidates:
                    raise NotFoundError(
                        f"Item with id '{item.id}' not found.", param=f"input[{index}].id"
                    )
                resolved.append(candidates[-1])
                continue
            same = next((c for c in reversed(candidates) if c.data == item), None)
            resolved.append(same if same is not None else item)
        return resolved

    # --- rendering and storage ---------------------------------------------------------------

    def _body(
        self,
        prepared: Prepared,
        status: str,
        usage: Usage | None = None,
        incomplete_reason: str | None = None,
        error: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Every Response field but `output`, in OpenAI's order."""
        request = prepared.request
        text: dict[str, Any] = {"format": {"type": "text"}}
        if request.text is not None:
            text = request.text.model_dump(mode="json", by_alias=True, exclude_none=True)
        text.setdefault("verbosity", "medium")
        reasoning: dict[str, str | None] = {"effort": None, "summary": None}
        if request.reasoning is not None:
            reasoning = {
                "effort": request.reasoning.effort,
                "summary": request.reasoning.summary or request.reasoning.generate_summary,
            }
        tool_choice: Any = request.tool_choice or "auto"
        if not isinstance(tool_choice, str):
            tool_choice = tool_choice.model_dump(mode="json", exclude_none=True)
        return {
            "id": prepared.id,
            "object": "response",
            "created_at": prepared.created_at,
            "status": status,
            "background": bool(request.background),
            "completed_at": int(time.time()) if status == "completed" else None,
            "conversation": None,
            "error": error,
            "frequency_penalty": request.frequency_penalty or 0.0,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": request.max_tool_calls,
            "metadata": request.metadata or {},
            "model": model or prepared.route.config.name,  # a fallback reports its own name
            "parallel_tool_calls": (
                True if request.parallel_tool_calls is None else request.parallel_tool_calls
            ),
            "presence_penalty": request.presence_penalty or 0.0,
            "previous_response_id": request.previous_response_id,
            "prompt": None,
            "prompt_cache_key": request.prompt_cache_key,
            "reasoning": reasoning,
            "safety_identifier": request.safety_identifier,
            "service_tier": "default",
            "store": request.store is not False,
            "temperature": 1.0 if request.temperature is None else request.temperature,
            "text": text,
            "tool_choice": tool_choice,
            "tools": echo_tools(request),
            "top_logprobs": request.top_logprobs or 0,
            "top_p": 1.0 if request.top_p is None else request.top_p,
            "truncation": request.truncation or "disabled",
            "usage": (
                usage_object(
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cached_tokens,
                    usage.reasoning_tokens,
                )
                if usage is not None
                else None
            ),
            "user": request.user,
        }

    async def _save(
        self, prepared: Prepared, body: dict[str, Any], output: list[dict[str, Any]]
    ) -> None:
        if not prepared.storing:
            return
        await self._store.insert_response(
            NewResponse(
                id=prepared.id,
                created_at=prepared.created_at,
                status=body["status"],
                model=body["model"],
                previous_response_id=prepared.request.previous_response_id,
                body=body,
                history_pks=[item.pk for item in prepared.context.history],
                input=prepared.context.entries,
                output=output,
            )
        )

    # --- retrieve, delete, list --------------------------------------------------------------

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        stored = await self._store.get_response(response_id)
        if stored is None:
            raise _response_not_found(response_id)
        return render_response(stored.body, stored.output)

    async def delete(self, response_id: str) -> dict[str, Any]:
        if not await self._store.delete_response(response_id):
            raise _response_not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def list_input_items(
        self, response_id: str, *, limit: int, order: str, after: str | None
    ) -> dict[str, Any]:
        items = await self._store.list_input_items(response_id)
        if items is None:
            raise _response_not_found(response_id)
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


def _response_not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")


def _user_message(text: str) -> ConcreteItem:
    return MessageItem(role="user", content=text)
