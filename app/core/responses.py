"""The response lifecycle: resolve the model, assemble the context, generate, store, render.

`create` reads top-down as the steps it takes. Every step that can refuse the request does so
before the upstream is called, so bad input costs no tokens and leaves no row behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.backends.base import Generation
from app.backends.registry import Registry, Route
from app.core.items import ConcreteItem, canonical_item, check_item
from app.core.requests import check_request, echo_tool, generation_request
from app.errors import GatewayError, NotFoundError, UpstreamError
from app.ids import new_id
from app.schemas.requests import CreateResponseRequest, FunctionTool, ItemReference, MessageItem
from app.schemas.responses import error_object, list_object, render_response, usage_object
from app.store.responses import InputEntry, NewResponse, ResponseStore, StoredItem


@dataclass(slots=True)
class Context:
    """The input of one generation: inherited history, then this request's own entries."""

    history: list[StoredItem]
    entries: list[InputEntry]
    items: list[dict[str, Any]]  # what the backend sees: history + input, in order


class ResponsesService:
    def __init__(self, store: ResponseStore, registry: Registry) -> None:
        self._store = store
        self._registry = registry

    # --- create ------------------------------------------------------------------------------

    async def create(self, request: CreateResponseRequest) -> dict[str, Any]:
        route = self._resolve(request.model)
        check_request(request, route.config.backend)
        context = await self._assemble(request)
        response_id = new_id("resp")
        created_at = int(time.time())
        generation_input = generation_request(request, route.upstream_model, context.items)
        try:
            generation = await route.backend.generate(generation_input)
        except UpstreamError as exc:
            if exc.status >= 500 and request.store is not False:
                await self._store_failed(request, route, context, response_id, created_at, exc)
                exc.message += f" The response was stored as failed: {response_id}."
            raise
        body = self._body(request, route, response_id, created_at, generation)
        if request.store is not False:
            await self._store.insert_response(
                self._new_response(request, response_id, body, context, generation.output)
            )
        return render_response(body, generation.output)

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
        request: CreateResponseRequest,
        route: Route,
        response_id: str,
        created_at: int,
        generation: Generation | None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Every Response field but `output`, in OpenAI's order."""
        status = "failed" if generation is None else generation.status
        usage = generation.usage if generation is not None else None
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
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "background": bool(request.background),
            "completed_at": int(time.time()) if status == "completed" else None,
            "conversation": None,
            "error": error,
            "frequency_penalty": request.frequency_penalty or 0.0,
            "incomplete_details": (
                {"reason": generation.incomplete_reason}
                if generation is not None and generation.incomplete_reason
                else None
            ),
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": request.max_tool_calls,
            "metadata": request.metadata or {},
            "model": route.config.name,
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
            "tools": [echo_tool(t) for t in request.tools or () if isinstance(t, FunctionTool)],
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

    def _new_response(
        self,
        request: CreateResponseRequest,
        response_id: str,
        body: dict[str, Any],
        context: Context,
        output: list[dict[str, Any]],
    ) -> NewResponse:
        return NewResponse(
            id=response_id,
            created_at=body["created_at"],
            status=body["status"],
            model=body["model"],
            previous_response_id=request.previous_response_id,
            body=body,
            history_pks=[item.pk for item in context.history],
            input=context.entries,
            output=output,
        )

    async def _store_failed(
        self,
        request: CreateResponseRequest,
        route: Route,
        context: Context,
        response_id: str,
        created_at: int,
        exc: GatewayError,
    ) -> None:
        error = error_object("server_error", exc.message)
        body = self._body(request, route, response_id, created_at, None, error)
        await self._store.insert_response(
            self._new_response(request, response_id, body, context, [])
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
