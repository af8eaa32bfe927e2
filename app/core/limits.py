"""Per-key limits: requests and tokens per minute (shared by every replica through the
database), and the size limits of a create request.

Exactness. Requests per minute are exact across replicas: the admission UPSERT serializes on the
key's window row, so at most `rpm` requests are admitted in one minute window whatever the
concurrency. Windows are fixed minutes, so a burst straddling a minute boundary can see up to
2 × rpm within 60 seconds (as with any fixed window). Tokens per minute are checked before a
request (a key whose window already used `tpm` tokens is refused) and counted after it, when
usage is flushed (every `GATEWAY_USAGE_FLUSH_SECONDS`): requests already in flight when the limit
is reached still finish, so a window can overshoot `tpm` by what they use.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from app.core.keys import Principal
from app.errors import BadRequestError, RateLimitError
from app.schemas.requests import CreateResponseRequest
from app.store.database import Database
from app.store.limits import WINDOW_SECONDS, LimitStore, WindowCounts


def current_window(now: float | None = None) -> int:
    now = time.time() if now is None else now
    return int(now // WINDOW_SECONDS) * WINDOW_SECONDS


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `250ms`."""
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass(frozen=True, slots=True)
class RateState:
    rpm: int | None
    tpm: int | None
    counts: WindowCounts
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        reset = duration(self.reset_seconds)
        if self.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, self.rpm - self.counts.requests))
            headers["x-ratelimit-reset-requests"] = reset
        if self.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm - self.counts.tokens))
            headers["x-ratelimit-reset-tokens"] = reset
        return headers


class RateLimiter:
    def __init__(self, database: Database) -> None:
        self._store = LimitStore(database)

    async def admit(self, principal: Principal) -> dict[str, str]:
        """Count a create request against its key's limits. Returns the `x-ratelimit-*`
        headers for the reply, or raises `RateLimitError` (429) carrying them and
        `Retry-After`. A key without limits (or open mode) costs no database round trip."""
        if principal.key_id is None or (principal.rpm is None and principal.tpm is None):
            return {}
        now = time.time()
        window = current_window(now)
        admitted, counts = await self._store.admit(
            principal.key_id, window, principal.rpm, principal.tpm
        )
        state = RateState(principal.rpm, principal.tpm, counts, window + WINDOW_SECONDS - now)
        headers = state.headers()
        if admitted:
            return headers
        tokens_out = principal.tpm is not None and counts.tokens >= principal.tpm
        what, limit, used = (
            ("tokens", principal.tpm, counts.tokens)
            if tokens_out
            else ("requests", principal.rpm, counts.requests)
        )
        headers["retry-after"] = str(max(1, math.ceil(state.reset_seconds)))
        raise RateLimitError(
            f"Rate limit reached for key {principal.key_id} in project {principal.project} on "
            f"{what} per min (RPM/TPM): Limit {limit}, Used {used}. Please try again in "
            f"{duration(state.reset_seconds)}.",
            type=what,
            headers=headers,
        )

    async def add_tokens(self, tokens: dict[str, int]) -> None:
        await self._store.add_tokens(current_window(), tokens)

    async def prune(self) -> int:
        return await self._store.prune(current_window() - WINDOW_SECONDS)


def check_input_size(request: CreateResponseRequest, max_items: int) -> None:
    """Refuse more input items than the gateway accepts in one request (400)."""
    if isinstance(request.input, list) and len(request.input) > max_items:
        raise BadRequestError(
            f"Invalid 'input': array too long. Expected an array with maximum length "
            f"{max_items}, but got an array with length {len(request.input)} instead.",
            param="input",
            code="array_above_max_length",
        )
