"""The stream event types the gateway builds, read off its source: each is one the openai SDK
knows, and one Open Responses defines unless it is a known exception. The streams of
`test_open_responses_schema.py` check the events on the paths they take; this covers the
names on paths they do not."""

from __future__ import annotations

import re
from pathlib import Path

import app
from app.backends.responses import _OPENAI_EVENT_NAMES
from app.core.events import _DELTA_EVENT, _DONE_EVENT, TERMINAL_EVENTS
from tests.schemas import OPENAI_ONLY_EVENTS, open_responses_events, sdk_event_types


def test_every_event_name_in_the_code_is_one_the_sdk_knows() -> None:
    source = "\n".join(path.read_text() for path in Path(app.__file__).parent.rglob("*.py"))
    names = set(re.findall(r'\.event\(\s*"([^"]+)"', source))
    names |= set(_DELTA_EVENT.values()) | set(_DONE_EVENT.values()) | set(TERMINAL_EVENTS)
    names |= {"response.function_call_arguments.delta", "response.function_call_arguments.done"}
    names |= {"response.content_part.added", "response.content_part.done"}
    names |= set(_OPENAI_EVENT_NAMES.values())  # what a Responses upstream's names become
    assert len(names) > 15
    unknown = names - set(sdk_event_types())
    assert not unknown, f"not event types of the openai SDK: {sorted(unknown)}"
    outside = names - set(open_responses_events()) - OPENAI_ONLY_EVENTS
    assert not outside, f"neither Open Responses events nor known exceptions: {sorted(outside)}"
