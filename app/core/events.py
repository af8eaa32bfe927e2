"""Turns backend deltas into the Responses stream event ladder, and assembles the output items.

For each output item: `output_item.added` → (content items) `content_part.added` → deltas →
`….done` → `content_part.done` → `output_item.done`. Reasoning is closed when text or a tool
call begins; the message is closed when the first tool call begins. Parallel tool calls may
interleave by upstream index, so several function_call items can be open at once; every event
names its item, and all are closed, in output order, when the stream ends. Sequence numbers
start at 0 and increase by one per event.

A backend that speaks Responses natively sends the upstream's own events (`NativeEvent`): they
are relayed in order inside our ladder, numbered by us, with the upstream's `output_index`
mapped to ours. Their items are tracked like ours (parts, arguments), so a stream cut short
still closes them and stores their partial content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.backends.base import (
    Delta,
    Finish,
    NativeEvent,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
)
from app.backends.chat_tools import custom_input
from app.schemas.items import (
    custom_tool_call_item,
    function_call_item,
    message_item,
    output_text_part,
    reasoning_item,
)

Event = dict[str, Any]
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(slots=True)
class _Part:
    kind: str  # "output_text" | "refusal" | "reasoning_text"
    chunks: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def wire(self) -> dict[str, Any]:
        if self.kind == "output_text":
            return output_text_part(self.text, self.logprobs)
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": self.text}
        return {"type": "reasoning_text", "text": self.text}


@dataclass(slots=True)
class _OpenItem:
    index: int
    item: dict[str, Any]
    parts: list[_Part] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.item["id"])


_DELTA_EVENT = {
    "output_text": "response.output_text.delta",
    "refusal": "response.refusal.delta",
    "reasoning_text": "response.reasoning_text.delta",
}
_DONE_EVENT = {
    "output_text": "response.output_text.done",
    "refusal": "response.refusal.done",
    "reasoning_text": "response.reasoning_text.done",
}


def _item_status(kind: str, status: str) -> str:
    # Hosted-tool calls (web_search_call, image_generation_call…) have no `incomplete` status;
    # `failed` is the one every one of them knows.
    if status == "incomplete" and kind not in ("message", "function_call", "custom_tool_call"):
        return "failed"
    return status


class EventLadder:
    """Feed deltas in, get events out; `output` holds the finished items in order."""

    def __init__(self, sequence: int = 0) -> None:
        self.sequence = sequence
        self.output: list[dict[str, Any]] = []
        self._open: dict[int, _OpenItem] = {}  # output index → open item
        self._reasoning: _OpenItem | None = None
        self._message: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}  # upstream tool-call index → open item
        self._native: dict[int, int] = {}  # a native upstream's output index → ours
        self.finish: Finish | None = None

    def event(self, type_: str, **fields: Any) -> Event:
        event = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    # --- opening and closing items ------------------------------------------------------------

    def _add(self, item: dict[str, Any], events: list[Event]) -> _OpenItem:
        index = len(self.output)
        self.output.append(item)
        opened = _OpenItem(index, item)
        self._open[index] = opened
        events.append(self.event("response.output_item.added", output_index=index, item=dict(item)))
        return opened

    def _add_part(self, item: _OpenItem, kind: str, events: list[Event]) -> _Part:
        part = _Part(kind)
        item.parts.append(part)
        events.append(
            self.event(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=len(item.parts) - 1,
                part=part.wire(),
            )
        )
        return part

    def _close_part(self, item: _OpenItem, events: list[Event]) -> None:
        part = item.parts[-1]
        where = {
            "item_id": item.id,
            "output_index": item.index,
            "content_index": len(item.parts) - 1,
        }
        text = part.text
        if part.kind == "output_text":
            events.append(
                self.event(_DONE_EVENT[part.kind], **where, text=text, logprobs=part.logprobs)
            )
        elif part.kind == "refusal":
            events.append(self.event(_DONE_EVENT[part.kind], **where, refusal=text))
        else:
            events.append(self.event(_DONE_EVENT[part.kind], **where, text=text))
        events.append(self.event("response.content_part.done", **where, part=part.wire()))

    def _close(self, item: _OpenItem, status: str, events: list[Event]) -> None:
        del self._open[item.index]
        data = item.item
        if data["type"] == "function_call":
            data["arguments"] = "".join(item.arguments)
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=item.index,
                    arguments=data["arguments"],
                    name=data["name"],
                )
            )
        elif data["type"] == "custom_tool_call":
            self._close_custom(item, events)
        elif item.parts:
            self._close_part(item, events)
            data["content"] = [part.wire() for part in item.parts]
        if data["type"] != "reasoning":
            data["status"] = _item_status(data["type"], status)
        events.append(self.event("response.output_item.done", output_index=item.index, item=data))

    def _close_custom(self, item: _OpenItem, events: list[Event]) -> None:
        """A custom tool's input arrives as the JSON arguments of the function it became
        (`{"input": "..."}`), which cannot be unwrapped piece by piece: it is sent as one delta
        when the call is complete."""
        data = item.item
        data["input"] = custom_input("".join(item.arguments))
        where = {"item_id": item.id, "output_index": item.index}
        if data["input"]:
            events.append(
                self.event("response.custom_tool_call_input.delta", **where, delta=data["input"])
            )
        events.append(
            self.event("response.custom_tool_call_input.done", **where, input=data["input"])
        )

    def _close_reasoning(self, events: list[Event]) -> None:
        if self._reasoning is not None:
            self._close(self._reasoning, "completed", events)
            self._reasoning = None

    def _close_message(self, events: list[Event]) -> None:
        if self._message is not None:
            self._close(self._message, "completed", events)
            self._message = None

    # --- deltas -------------------------------------------------------------------------------

    def _content(
        self,
        kind: str,
        text: str,
        events: list[Event],
        logprobs: list[dict[str, Any]] | None = None,
    ) -> None:
        if kind == "reasoning_text":
            self._close_message(events)
            if self._reasoning is None:
                item = reasoning_item("")
                item["content"] = []
                self._reasoning = self._add(item, events)
            target = self._reasoning
        else:
            self._close_reasoning(events)
            if self._message is None:
                item = message_item([], "in_progress")
                self._message = self._add(item, events)
            target = self._message
        if not target.parts or target.parts[-1].kind != kind:
            if target.parts:
                self._close_part(target, events)
            self._add_part(target, kind, events)
        part = target.parts[-1]
        part.chunks.append(text)
        if logprobs:
            part.logprobs.extend(logprobs)
        # Built in place (the hottest event): `event(...)` would build it twice.
        event = {
            "type": _DELTA_EVENT[kind],
            "sequence_number": self.sequence,
            "item_id": target.id,
            "output_index": target.index,
            "content_index": len(target.parts) - 1,
            "delta": text,
        }
        self.sequence += 1
        if kind == "output_text":
            event["logprobs"] = logprobs or []
        events.append(event)

    def _tool_call(self, delta: ToolCallDelta, events: list[Event]) -> None:
        call = self._calls.get(delta.index)
        if call is None:
            self._close_reasoning(events)
            self._close_message(events)
            build = custom_tool_call_item if delta.custom else function_call_item
            item = build(delta.call_id, delta.name or "", "", "in_progress", delta.namespace)
            call = self._calls[delta.index] = self._add(item, events)
        elif delta.name and not call.item["name"]:
            call.item["name"] = delta.name
        if delta.arguments:
            call.arguments.append(delta.arguments)
            if call.item["type"] == "custom_tool_call":
                return
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=call.id,
                    output_index=call.index,
                    delta=delta.arguments,
                )
            )

    def _relay(self, event: dict[str, Any], events: list[Event]) -> None:
        kind = event["type"]
        fields = {key: value for key, value in event.items() if key != "type"}
        if kind == "response.output_item.added":
            added = self._add(dict(fields["item"]), events)
            self._native[fields.get("output_index", added.index)] = added.index
            return
        index = fields.get("output_index")
        if index is None:  # not about an output item (audio…): relayed as it is
            events.append(self.event(kind, **fields))
            return
        index = fields["output_index"] = self._native.get(index, index)
        opened = self._open.get(index)
        if kind == "response.output_item.done" and 0 <= index < len(self.output):
            self._open.pop(index, None)
            self.output[index] = fields["item"]
        elif opened is not None:
            self._track(opened, kind, fields)
        events.append(self.event(kind, **fields))

    @staticmethod
    def _track(opened: _OpenItem, kind: str, fields: dict[str, Any]) -> None:
        """Keep what a native item has produced so far, for a stream that is cut short."""
        if kind == "response.content_part.added":
            opened.parts.append(_Part(str(fields.get("part", {}).get("type"))))
        elif kind in _DELTA_EVENT.values() and opened.parts:
            opened.parts[-1].chunks.append(str(fields.get("delta", "")))
        elif kind == "response.function_call_arguments.delta":
            opened.arguments.append(str(fields.get("delta", "")))

    def feed(self, delta: Delta) -> list[Event]:
        events: list[Event] = []
        if isinstance(delta, TextDelta):
            self._content("output_text", delta.text, events, delta.logprobs)
        elif isinstance(delta, RefusalDelta):
            self._content("refusal", delta.text, events)
        elif isinstance(delta, ReasoningDelta):
            self._content("reasoning_text", delta.text, events)
        elif isinstance(delta, ToolCallDelta):
            self._tool_call(delta, events)
        elif isinstance(delta, NativeEvent):
            self._relay(delta.event, events)
        else:
            self.finish = delta
        return events

    def close_all(self, status: str) -> list[Event]:
        """Close every open item with `status` (completed, or incomplete when cut short)."""
        events: list[Event] = []
        if not self.output and status == "completed":
            # An empty answer is still an (empty) assistant message, as without streaming.
            self._message = self._add(message_item([], "in_progress"), events)
            self._add_part(self._message, "output_text", events)
        for index in sorted(self._open):
            self._close(self._open[index], status, events)
        self._reasoning = self._message = None
        self._calls.clear()
        return events

    def snapshot_output(self) -> list[dict[str, Any]]:
        """The output so far (for a response cut short): open items carry their partial content."""
        output = []
        for index, item in enumerate(self.output):
            opened = self._open.get(index)
            if opened is None:
                output.append(item)
                continue
            data = dict(item)
            if data["type"] == "function_call":
                data["arguments"] = "".join(opened.arguments)
            elif data["type"] == "custom_tool_call":
                data["input"] = custom_input("".join(opened.arguments))
            elif opened.parts or "content" in data:
                data["content"] = [part.wire() for part in opened.parts]
            if data["type"] != "reasoning":
                data["status"] = _item_status(data["type"], "incomplete")
            output.append(data)
        return output
