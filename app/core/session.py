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
replica is seen. What an unstored response inherited from a stored one is kept as that: stored
items by reference, with the id of the stored response they came from (its `anchor`), whose
existence a continuation checks; a stored turn on top refers to those items, as any chain does,
rather than storing them again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.core.generation import Prepared
from app.store.contexts import StoredItem

# Responses whose context a connection keeps (the newest of each lane, forks included).
DEFAULT_CAPACITY = 8
# Refused continuations remembered, so that one still running when refused is not kept.
REFUSED_KEPT = 64
ENDED = frozenset({"completed", "incomplete"})


@dataclass(frozen=True, slots=True)
class Remembered:
    """The context a turn continuing from an unstored response inherits."""

    history: list[StoredItem]  # inherited from `anchor`, stored
    entries: list[StoredItem | dict[str, Any]]  # its own input (stored items by reference), output
    anchor: str | None  # the stored response `history` belongs to, if any
    # The context cache's epoch when the stored items were read: once it has moved (a delete,
    # on any replica), which of them are still stored is checked before they are used again.
    epoch: int | None


class LocalContexts:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._contexts: OrderedDict[str, Remembered] = OrderedDict()
        self._refused: OrderedDict[str, None] = OrderedDict()

    def get(self, response_id: str) -> Remembered | None:
        context = self._contexts.get(response_id)
        if context is not None:
            self._contexts.move_to_end(response_id)
        return context

    def remember(self, prepared: Prepared, response: dict[str, Any]) -> None:
        """A `store: false` response that ended (`completed` or `incomplete`; a failed or
        cancelled one is no state to continue from): its context and output, for the next
        turn."""
        if (
            prepared.storing
            or response["status"] not in ENDED
            or self._capacity == 0
            or prepared.id in self._refused
        ):
            return
        context = prepared.context
        own = context.items[len(context.history) :]
        entries: list[StoredItem | dict[str, Any]] = [
            StoredItem(entry, data) if isinstance(entry, int) else entry
            for entry, data in zip(context.entries, own, strict=True)
        ]
        entries += response["output"]
        self._contexts[prepared.id] = Remembered(
            context.history, entries, context.anchor, context.cache_epoch
        )
        self._contexts.move_to_end(prepared.id)
        while len(self._contexts) > self._capacity:
            self._contexts.popitem(last=False)

    def evict(self, response_id: str | None) -> None:
        """A continuation of `response_id` failed: it is not continued from again, including
        when it is still running now (and would otherwise be remembered when it ends)."""
        if response_id is None:
            return
        self._contexts.pop(response_id, None)
        self._refused[response_id] = None
        while len(self._refused) > REFUSED_KEPT:
            self._refused.popitem(last=False)

    def __len__(self) -> int:
        return len(self._contexts)
