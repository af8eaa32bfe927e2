"""Retries, fallbacks and concurrency limits, as a `Backend` wrapping the backends of a route, so
that core's run loop never learns about any of them.

Rules:
- Only `UpstreamUnavailableError` (connection errors, 429, 5xx) is retried, and only before the
  first delta of an answer: once output may have reached the client, a retry would repeat it.
  A timeout is not retried (the upstream may still be generating, and billing, the first
  attempt) but does move on to the next fallback, as does a model at its concurrency limit.
- Backoff is exponential with jitter (half fixed, half random, so that clients that failed
  together do not come back together); an upstream `Retry-After` replaces it, and one longer
  than `MAX_RETRY_AFTER` ends the retries on that model rather than holding the client.
- Fallbacks are tried in the listed order, each with its own retries; the fallbacks' own
  fallbacks are not followed, so a chain cannot loop. A fallback that answers is reported as
  `Generation.model` / `Finish.model`.
- `max_concurrency` is a semaphore per configured model, shared by every route that reaches it
  (aliases, prefix rules, fallbacks), held for the whole generation. A full model queues the
  request for up to `queue_timeout` seconds (bursts are smoothed rather than refused), then
  answers 429 `rate_limit_exceeded`, or hands over to the next fallback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from app.backends.base import Backend, Compaction, Delta, Finish, Generation, GenerationRequest
from app.config import ModelConfig
from app.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5  # seconds before the first retry, doubled each time
BACKOFF_CAP = 8.0
MAX_RETRY_AFTER = 30.0
_FALL_BACK_ON = (UpstreamUnavailableError, UpstreamTimeoutError)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Target:
    """One model a route may use: its configuration, the name to report and the upstream's."""

    config: ModelConfig
    name: str
    upstream_model: str
    backend: Backend
    slots: asyncio.Semaphore | None


def backoff(attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None to stop retrying."""
    if retry_after is not None:
        return retry_after if retry_after <= MAX_RETRY_AFTER else None
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


class _Slot:
    """One of a model's `max_concurrency` slots, held while it generates (a no-op without a
    limit). A class rather than an `asynccontextmanager`: every request enters one."""

    __slots__ = ("_held", "_target")

    def __init__(self, target: Target) -> None:
        self._target = target
        self._held = False

    async def __aenter__(self) -> None:
        target = self._target
        slots = target.slots
        if slots is None:
            return
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), target.config.queue_timeout)
            except TimeoutError:
                raise UpstreamUnavailableError(
                    f"Model {target.name!r} is serving its limit of "
                    f"{target.config.max_concurrency} requests at once; try again shortly.",
                    status=429,
                    type="requests",
                    code="rate_limit_exceeded",
                ) from None
        else:
            await slots.acquire()  # free: returns without waiting
        self._held = True

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            assert self._target.slots is not None
            self._target.slots.release()


async def _close(deltas: AsyncGenerator[Delta, None], slot: _Slot) -> None:
    """Close a stream's upstream request, then free its slot (even if the close is cut short)."""
    try:
        await deltas.aclose()
    finally:
        slot.release()


def _for(target: Target, request: GenerationRequest) -> GenerationRequest:
    """`request` addressed to `target`'s upstream model (as built, for a route's first)."""
    if request.model == target.upstream_model:
        return request
    return replace(request, model=target.upstream_model)


class RoutedBackend(Backend):
    def __init__(self, targets: list[Target]) -> None:
        self.name = targets[0].name
        # Hosted tools only where every model of the route can take them: a fallback must be
        # able to serve whatever its primary accepted.
        self.responses_native = all(target.backend.responses_native for target in targets)
        # Only without fallbacks: another upstream could not read the upstream's own items.
        self.native_compaction = len(targets) == 1 and targets[0].backend.native_compaction
        # Penalties only where every model of the route takes them, as hosted tools.
        self.penalties = all(target.backend.penalties for target in targets)
        self._targets = targets

    def _retry_delay(self, target: Target, attempt: int, exc: UpstreamUnavailableError) -> float:
        delay = backoff(attempt, exc.retry_after) if attempt < target.config.max_retries else None
        if delay is None:
            raise exc
        log.warning("model %s: retry %d in %.2fs: %s", target.name, attempt + 1, delay, exc)
        return delay

    async def _call_on(self, target: Target, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call` (one request to `target`'s backend) in one of its slots, retried."""
        for attempt in itertools.count():
            async with _Slot(target):
                try:
                    return await call()
                except UpstreamUnavailableError as exc:
                    delay = self._retry_delay(target, attempt, exc)
            await asyncio.sleep(delay)  # the slot is free while we wait
        raise AssertionError("unreachable")

    async def _generate_on(self, target: Target, request: GenerationRequest) -> Generation:
        return await self._call_on(target, lambda: target.backend.generate(request))

    async def generate(self, request: GenerationRequest) -> Generation:
        failure: UpstreamError | None = None
        for index, target in enumerate(self._targets):
            try:
                result = await self._generate_on(target, _for(target, request))
            except _FALL_BACK_ON as exc:
                failure = self._next(index, exc)
                continue
            if index:
                result.model = target.name
            return result
        assert failure is not None
        raise failure

    async def _open_stream(
        self, target: Target, request: GenerationRequest
    ) -> tuple[Delta, AsyncGenerator[Delta, None], _Slot]:
        """The first delta of a stream, retrying until one arrives; what the stream holds (the
        upstream request, its slot) is the caller's to release with `_close`."""
        for attempt in itertools.count():
            slot = _Slot(target)
            await slot.__aenter__()
            try:
                deltas = target.backend.stream(request)
            except BaseException:
                slot.release()
                raise
            try:
                first = await anext(deltas)
            except UpstreamUnavailableError as exc:
                await _close(deltas, slot)
                await asyncio.sleep(self._retry_delay(target, attempt, exc))
                continue
            except StopAsyncIteration:
                await _close(deltas, slot)
                raise UpstreamError(
                    f"Model {target.name!r} ended its stream without an answer."
                ) from None
            except BaseException:
                await _close(deltas, slot)
                raise
            return first, deltas, slot
        raise AssertionError("unreachable")

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        failure: UpstreamError | None = None
        for index, target in enumerate(self._targets):
            try:
                first, deltas, slot = await self._open_stream(target, _for(target, request))
            except _FALL_BACK_ON as exc:
                failure = self._next(index, exc)
                continue
            # From here on output exists: faults propagate, never retried or re-routed.
            try:
                if not index:  # the first model answers: its deltas pass as they are
                    yield first
                    async for delta in deltas:
                        yield delta
                    return
                yield _mark(first, target.name)
                async for delta in deltas:
                    yield _mark(delta, target.name)
                return
            finally:
                await _close(deltas, slot)
        assert failure is not None
        raise failure

    async def count_tokens(self, request: GenerationRequest) -> int | None:
        """The first model's count: the one that answers unless it fails."""
        target = self._targets[0]
        return await target.backend.count_tokens(_for(target, request))

    async def compact(self, request: GenerationRequest) -> Compaction | None:
        """The model's own upstream compaction, retried as a generation is; None on a route
        with fallbacks (the upstream's compaction item would mean nothing to a fallback on
        another upstream, and the gateway's summary works on any)."""
        if len(self._targets) > 1:
            return None
        target = self._targets[0]
        routed = _for(target, request)
        return await self._call_on(target, lambda: target.backend.compact(routed))

    def _next(self, index: int, exc: UpstreamError) -> UpstreamError:
        if index + 1 < len(self._targets):
            failed, following = self._targets[index].name, self._targets[index + 1].name
            log.warning("model %s failed, falling back to %s: %s", failed, following, exc)
        return exc

    async def aclose(self) -> None:
        """Nothing of its own: the registry closes the backends it shares between routes."""


def _mark(delta: Delta, answered: str) -> Delta:
    if isinstance(delta, Finish):
        return replace(delta, model=answered)
    return delta
