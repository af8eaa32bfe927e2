"""Wire bodies validated against JSON schemas: the Open Responses spec (what the Open Responses
compliance suite checks, through zod schemas generated from this same document) and the
component schemas of OpenAI's openapi.yaml (cut by `fixtures/openai_components.py`).

Both are OpenAPI 3.1 documents, so their schemas are JSON Schema 2020-12: each document is one
`referencing` resource and `#/components/schemas/X` refs resolve inside it. Objects are open
(extra keys pass, as zod's default `strip` lets them); required keys, enums and nullability are
checked as written.
"""

from __future__ import annotations

import json
import typing
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from openai.types.responses import ResponseStreamEvent
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

FIXTURES = Path(__file__).with_name("fixtures")


class Spec:
    def __init__(self, path: Path, uri: str, errata: dict[str, Any] | None = None) -> None:
        self.document = json.loads(path.read_text())
        for name, fix in (errata or {}).items():
            fix(self.document["components"]["schemas"][name])
        self.uri = uri
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(uri, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    @property
    def schemas(self) -> dict[str, Any]:
        return self.document["components"]["schemas"]  # type: ignore[no-any-return]

    def validator(self, name: str) -> Draft202012Validator:
        if name not in self._validators:
            assert name in self.schemas, f"{name} is not a schema of {self.uri}"
            ref = {"$ref": f"{self.uri}#/components/schemas/{name}"}
            self._validators[name] = Draft202012Validator(ref, registry=self.registry)
        return self._validators[name]

    def check(self, name: str, instance: Any) -> None:
        errors = list(self.validator(name).iter_errors(instance))
        if errors:
            others = "".join(f"\n  also {_describe(error)}" for error in errors[:10])
            raise AssertionError(
                f"not a valid {self.uri} {name}: {_describe(best_match(errors))}{others}\n"
                + json.dumps(instance, indent=1)[:3000]
            )

    def event_schemas(self, union: dict[str, Any]) -> dict[str, str]:
        """Event type → schema name, for a union (`oneOf`/`anyOf` of refs) of event schemas."""
        members = union.get("oneOf") or union.get("anyOf") or []
        mapping = {}
        for member in members:
            name = member["$ref"].rsplit("/", 1)[1]
            type_ = self.schemas[name]["properties"]["type"]
            mapping[type_.get("const") or type_["enum"][0]] = name
        return mapping


def _describe(error: ValidationError) -> str:
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path)
    # A failed oneOf says little; the deepest failure below it names the real field.
    if error.context:
        deepest = max(error.context, key=lambda sub: len(sub.absolute_path))
        return f"{where or '.'}: {error.message[:200]} (deepest: {_describe(deepest)})"
    return f"{where or '.'}: {error.message[:300]}"


def _nullable(*fields: str) -> Any:
    def fix(schema: dict[str, Any]) -> None:
        for part in [schema, *schema.get("allOf", ())]:
            for field in fields:
                if field in part.get("properties", {}):
                    part["properties"][field] = {
                        "anyOf": [part["properties"][field], {"type": "null"}]
                    }

    return fix


def _any_schema(schema: dict[str, Any]) -> None:
    schema["properties"]["schema"] = {"type": "object"}


# Where a schema rejects what the gateway sends on purpose, corrected before validating, each
# for the reason given; nothing else is loosened. (The report of these is the docstring of
# tests/test_open_responses_schema.py.)
OPEN_RESPONSES_ERRATA: dict[str, Any] = {
    # `schema` is generated as `anyOf: [null]`, which no JSON schema passes (a generator slip:
    # the request-side JsonSchemaResponseFormatParam has an object there).
    "JsonSchemaResponseFormat": _any_schema,
}
OPENAI_ERRATA: dict[str, Any] = {
    # `usage` is null until a response finishes (response.created, queued, failed), as in
    # OpenAI's own stream examples; the SDK's type is Optional, and Open Responses requires the
    # key, nullable.
    "Response": _nullable("usage"),
    # An empty page has no first or last item, so they are null (the SDK's pages read only
    # `data` and `has_more`).
    "ResponseItemList": _nullable("first_id", "last_id"),
    "ConversationItemList": _nullable("first_id", "last_id"),
    # Echoed as null when unset: Open Responses requires the key (nullable), OpenAI's schema
    # has a string when present, the SDK's type is Optional.
    "TextResponseFormatJsonSchema": _nullable("description"),
}


@cache
def open_responses() -> Spec:
    return Spec(
        FIXTURES / "openresponses-openapi-2026-04-24.json",
        "urn:openresponses",
        OPEN_RESPONSES_ERRATA,
    )


@cache
def openai_components() -> Spec:
    return Spec(FIXTURES / "openai-components.json", "urn:openai", OPENAI_ERRATA)


@cache
def open_responses_events() -> dict[str, str]:
    """The streaming events Open Responses defines (the compliance suite's union of 24)."""
    spec = open_responses()
    stream = spec.document["paths"]["/responses"]["post"]["responses"]["200"]["content"]
    return spec.event_schemas(stream["text/event-stream"]["schema"])


@cache
def openai_events() -> dict[str, str]:
    spec = openai_components()
    return spec.event_schemas(spec.schemas["ResponseStreamEvent"])


# Stream events OpenAI's SDK knows and Open Responses does not define (the compliance suite
# reports them as failed events). Sending the Open Responses name instead would break every
# openai SDK client, so the gateway keeps OpenAI's.
OPENAI_ONLY_EVENTS = {
    # Open Responses: response.reasoning.delta / response.reasoning.done, same fields.
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    # Custom (free-form) tools are OpenAI's; Open Responses has function tools only.
    "response.custom_tool_call_input.delta",
    "response.custom_tool_call_input.done",
}
# Stream events newer than the OpenAPI document in ../shared/spec: typed by the openai SDK (whose
# parsing of OpenAI's live API wins over the document), checked against the SDK's type only.
SDK_ONLY_EVENTS = {
    # Progress of a compaction (`compaction_trigger`) while its summary is sampled.
    "response.compaction.compacting",
}
# What Open Responses' `ItemField` and `Tool` unions hold. Hosted tools, their items and their
# events (`response.web_search_call.searching`…) and custom tools are OpenAI's alone: a body
# that carries one is checked against OpenAI's schemas only.
OPEN_RESPONSES_ITEMS = {"message", "function_call", "function_call_output", "reasoning"}

_SDK_EVENTS = {
    typing.get_args(member.model_fields["type"].annotation)[0]: member
    for member in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}


def sdk_event_types() -> list[str]:
    return list(_SDK_EVENTS)


def in_open_responses(response: dict[str, Any]) -> bool:
    return all(item["type"] in OPEN_RESPONSES_ITEMS for item in response["output"]) and all(
        tool["type"] == "function" for tool in response["tools"]
    )


def check_response_schemas(data: dict[str, Any]) -> None:
    openai_components().check("Response", data)
    if in_open_responses(data):
        open_responses().check("ResponseResource", data)


def check_event_schemas(events: list[dict[str, Any]]) -> None:
    """Every event: a type the SDK knows with each of its required fields present (and non-null
    where the SDK's type says so), valid against OpenAI's event schema and against Open
    Responses' (unless it is one of `OPENAI_ONLY_EVENTS`, or about an OpenAI-only item or tool);
    each Response inside checked too."""
    ours = open_responses_events()
    covered = all(in_open_responses(event["response"]) for event in events if "response" in event)
    covered &= all(
        event["item"]["type"] in OPEN_RESPONSES_ITEMS for event in events if "item" in event
    )
    for event in events:
        kind = event["type"]
        model = _SDK_EVENTS.get(kind)
        assert model is not None, f"{kind} is not an event type of the openai SDK"
        for name, info in model.model_fields.items():
            if info.is_required():
                assert name in event, f"{kind}.{name} is missing"
                if type(None) not in typing.get_args(info.annotation):
                    assert event[name] is not None, f"{kind}.{name} is null"
        if kind in SDK_ONLY_EVENTS:
            assert kind not in openai_events(), f"{kind} is in the spec now: drop it from the set"
        else:
            openai_components().check(openai_events()[kind], event)
        about = event.get("item", event.get("response", {"type": "message"}))
        if kind in ours and (covered or about.get("type") in OPEN_RESPONSES_ITEMS):
            open_responses().check(ours[kind], event)
        elif covered:
            assert kind in OPENAI_ONLY_EVENTS, f"{kind} is not an Open Responses event"
        if "response" in event:
            check_response_schemas(event["response"])
        if "item" in event and event["item"]["type"] in OPEN_RESPONSES_ITEMS:
            open_responses().check("ItemField", event["item"])


def check_item(item: dict[str, Any]) -> None:
    """A stored item (input items, conversation items): OpenAI's `ConversationItem` union, and
    Open Responses' `ItemField` for the types it has."""
    openai_components().check("ConversationItem", item)
    if item["type"] in OPEN_RESPONSES_ITEMS:
        open_responses().check("ItemField", item)


def check_item_list(data: dict[str, Any], schema: str) -> None:
    assert data["data"], "an empty list has no items to check"
    openai_components().check(schema, data)
    for item in data["data"]:
        check_item(item)


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error envelope: OpenAI's `ErrorResponse`, its `error` Open Responses' `ErrorPayload`."""
    assert response.status_code == status, response.text
    body = response.json()
    openai_components().check("ErrorResponse", body)
    open_responses().check("ErrorPayload", body["error"])
    return body["error"]  # type: ignore[no-any-return]
