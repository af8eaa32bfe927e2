"""What one WebSocket connection remembers between its turns (WebSocket mode).

OpenAI keeps the most recent response of a connection in memory, so that the next turn sends
only its new input and `previous_response_id`, `store: false` (and Zero Data Retention)
included: such a response exists nowhere else, and is found on that connection only. The
gateway does the same: `LocalContexts` holds, for the last few responses that ended on the
connection, the context a next turn inherits (the response's own context, then its output).
A turn that continues from one and fails (any 4xx or 5xx) evicts it, as the Open Responses
spec requires: the client starts again from what it knows, not from state the server kept.

Only `store: false` responses are kept: a stored one is found in the database (and the
process's context cache) like any other, with its existence checked, so that a delete on any
replica is seen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from app.core.generation import Prepared

# Responses whose context a connection keeps (the newest of each lane, forks included).
DEFAULT_CAPACITY = 8
ENDED = frozenset({"completed", "incomplete"})


class LocalContexts:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._contexts: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        context = self._contexts.get(response_id)
        if context is not None:
            self._contexts.move_to_end(response_id)
        return context

    def remember(self, prepared: Prepared, response: dict[str, Any]) -> None:
        """A `store: false` response that ended (`completed` or `incomplete`; a failed or
        cancelled one is no state to continue from): its context and output, for the next
        turn."""
        if prepared.storing or response["status"] not in ENDED or self._capacity == 0:
            return
        self._contexts[prepared.id] = [*prepared.context.items, *response["output"]]
        self._contexts.move_to_end(prepared.id)
        while len(self._contexts) > self._capacity:
            self._contexts.popitem(last=False)

    def evict(self, response_id: str | None) -> None:
        if response_id is not None:
            self._contexts.pop(response_id, None)

    def __len__(self) -> int:
        return len(self._contexts)
