"""Usage accounting: one row per generation (project, key, model, backend, tokens, latency,
status), plus the process's Prometheus numbers for the same events.

Rows are buffered in memory and written in one multi-row INSERT every `flush_seconds` (and at
shutdown), together with the tokens each key used for its per-minute limit. The request path
pays no database round trip for accounting; the price is that a process killed with -9 loses at
most `flush_seconds` of rows, and token limits see usage up to `flush_seconds` late.

Foreground generations are recorded when they end (`create`, `stream`); background ones by the
worker that completes them (`record_response`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING, Any

from app.core.compaction import ChargedError
from app.core.events import Event
from app.core.generation import Prepared
from app.core.limits import RateLimiter
from app.errors import GatewayError, StorageError
from app.metrics import Metrics
from app.store.database import Database
from app.store.usage import UsageStore

if TYPE_CHECKING:
    from app.core.responses import ResponsesService

log = logging.getLogger(__name__)

# Buffered rows kept across failed flushes before the oldest are dropped (and logged).
MAX_BUFFERED = 50_000
ENDING_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _tokens(usage: dict[str, Any] | None) -> tuple[int, int, int, int]:
    """(input, output, reasoning, cached) of a wire `usage` object."""
    if not usage:
        return 0, 0, 0, 0
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
        int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
    )


class UsageMeter:
    def __init__(
        self,
        database: Database,
        limiter: RateLimiter,
        metrics: Metrics,
        flush_seconds: float = 1.0,
    ) -> None:
        self._store = UsageStore(database)
        self._limiter = limiter
        self.metrics = metrics
        self._flush_seconds = flush_seconds
        self._rows: list[tuple[Any, ...]] = []
        self._tokens: dict[str, int] = defaultdict(int)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="usage-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            rows, self._rows = self._rows, []
            tokens, self._tokens = dict(self._tokens), defaultdict(int)
            try:
                await self._store.insert_usage(rows)
                await self._limiter.add_tokens(tokens)
            except StorageError as exc:
                log.warning("usage flush failed (%s); keeping %d rows for later", exc, len(rows))
                self._rows = (rows + self._rows)[-MAX_BUFFERED:]
                for key_id, count in tokens.items():
                    self._tokens[key_id] += count

    # --- recording ---------------------------------------------------------------------------

    def record(
        self,
        prepared: Prepared,
        key_id: str | None,
        status: str,
        usage: dict[str, Any] | None,
        latency: float,
        ttft: float | None = None,
    ) -> None:
        """Account one finished generation (never raises, never waits)."""
        model, backend = prepared.route.config.name, prepared.route.config.backend
        input_tokens, output_tokens, reasoning, cached = _tokens(usage)
        now = time.time()
        self._rows.append(  # in USAGE_COLUMNS order
            (
                now,
                time.strftime("%Y-%m-%d", time.gmtime(now)),
                prepared.project,
                key_id,
                prepared.id,
                model,
                backend,
                input_tokens,
                output_tokens,
                reasoning,
                cached,
                round(latency * 1000, 3),
                status,
            )
        )
        if key_id is not None and input_tokens + output_tokens:
            self._tokens[key_id] += input_tokens + output_tokens
        metrics = self.metrics
        metrics.child(metrics.upstream_seconds, model, backend, status).observe(latency)
        if ttft is not None:
            metrics.child(metrics.ttft_seconds, model, backend).observe(ttft)
        for kind, count in (
            ("input", input_tokens),
            ("output", output_tokens),
            ("reasoning", reasoning),
            ("cached", cached),
        ):
            if count:
                metrics.child(metrics.tokens, model, kind).inc(count)

    def record_response(
        self,
        prepared: Prepared,
        key_id: str | None,
        body: dict[str, Any],
        latency: float,
        ttft: float | None = None,
    ) -> None:
        self.record(prepared, key_id, str(body["status"]), body.get("usage"), latency, ttft)

    # --- foreground requests -----------------------------------------------------------------

    async def create(
        self, service: ResponsesService, prepared: Prepared, key_id: str | None
    ) -> dict[str, Any]:
        """`service.create`, accounted (a background request is accounted by its worker)."""
        started = time.perf_counter()
        try:
            response = await service.create(prepared)
        except GatewayError as exc:
            if not prepared.request.background:  # what the model already spent counts
                spent = exc.wire_usage() if isinstance(exc, ChargedError) else None
                self.record(prepared, key_id, "failed", spent, time.perf_counter() - started)
            raise
        if not prepared.request.background:
            self.record_response(prepared, key_id, response, time.perf_counter() - started)
        return response

    async def compact(
        self, service: ResponsesService, prepared: Prepared, key_id: str | None
    ) -> dict[str, Any]:
        """`service.compact`, accounted like a generation (its tokens count for the key)."""
        started = time.perf_counter()
        try:
            compacted = await service.compact(prepared)
        except ChargedError as exc:  # the model answered: what it cost counts
            usage = exc.wire_usage()
            self.record(prepared, key_id, "failed", usage, time.perf_counter() - started)
            raise
        except GatewayError:
            self.record(prepared, key_id, "failed", None, time.perf_counter() - started)
            raise
        self.record(
            prepared, key_id, "completed", compacted["usage"], time.perf_counter() - started
        )
        return compacted

    async def stream(
        self,
        events: AsyncGenerator[Event, None],
        prepared: Prepared | None = None,
        key_id: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Pass `events` through, counting the open stream; with `prepared` (a foreground
        generation) also account it: time to first delta, and its outcome — `cancelled` if the
        client went away before the end."""
        account = prepared is not None and not prepared.request.background
        started = time.perf_counter()
        ttft: float | None = None
        ending: dict[str, Any] | None = None
        self.metrics.active_streams.inc()
        try:
            async with aclosing(events):
                async for event in events:
                    kind = event["type"]
                    if ttft is None and kind.endswith(".delta"):
                        ttft = time.perf_counter() - started
                    elif kind in ENDING_EVENTS:
                        ending = event["response"]
                    yield event
        finally:
            self.metrics.active_streams.dec()
            if account and prepared is not None:
                latency = time.perf_counter() - started
                if ending is not None:
                    self.record_response(prepared, key_id, ending, latency, ttft)
                else:
                    self.record(prepared, key_id, "cancelled", None, latency, ttft)


async def usage_report(
    database: Database,
    *,
    project: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> list[dict[str, Any]]:
    """Usage totals by day, project and model (days are UTC `YYYY-MM-DD`, inclusive)."""
    return await UsageStore(database).aggregate(project=project, start=start, end=end)
