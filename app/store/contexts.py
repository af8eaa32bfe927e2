"""The per-process cache of recent contexts: response id → the items a continuation starts from.

One instance per process (held by `Database`), shared by every store that reads or writes
contexts, so its bound is the process's, not one per store."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class StoredItem:
    pk: int
    data: dict[str, Any]
    # Set once core has checked that `data` sends no file by URL (items never change, and a
    # cached context's items are reused by every later turn of its chain).
    no_file_url: bool = field(default=False, compare=False, repr=False)


class ContextCache:
    """Recently stored or loaded contexts, so that the next turn of a chain — usually served by
    the process that stored the last one — neither queries nor decodes its history. Items never
    change once stored, so an entry stays right as long as its response exists (checked with one
    primary-key lookup on every hit, which a plain create runs while the upstream answers) and
    no earlier turn was deleted (a DELETE or retention purge on any replica clears every
    replica's cache through the `rg_deletes` notification; one missed while a LISTEN connection
    was down is seen here once the entry is evicted). Bounded by the item references it holds
    (`max_items`; 0 turns it off), least recently used first out; the item dicts themselves are
    shared by the entries of one chain."""

    def __init__(self, max_items: int) -> None:
        self._entries: OrderedDict[str, tuple[str, list[StoredItem]]] = OrderedDict()
        self._refs = 0
        self._max_refs = max_items
        # Moved on by every `clear`. A context read from the database (or cache) before a clear
        # may hold items deleted since, so `put` takes the epoch its items were read in and
        # drops them if a clear came in between: a delete during a generation must not put the
        # deleted turn back under the new response's id.
        self.epoch = 0

    @property
    def size(self) -> int:
        """The item references held now."""
        return self._refs

    def get(self, response_id: str, project: str) -> list[StoredItem] | None:
        entry = self._entries.get(response_id)
        if entry is None or entry[0] != project:
            return None
        self._entries.move_to_end(response_id)
        return list(entry[1])

    def put(self, response_id: str, project: str, items: list[StoredItem], epoch: int) -> None:
        if epoch != self.epoch or len(items) > self._max_refs:
            return
        old = self._entries.pop(response_id, None)
        self._refs -= len(old[1]) if old else 0
        self._entries[response_id] = (project, items)
        self._refs += len(items)
        while self._refs > self._max_refs:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._refs -= len(evicted)

    def discard(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._refs -= len(entry[1])

    def clear(self) -> None:
        self._entries.clear()
        self._refs = 0
        self.epoch += 1
