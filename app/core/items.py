"""Input items: checks of what we cannot honour, and the canonical stored form of each item.

The canonical form is what `input_items` returns and what is stored: every item gets an `id`
(the client's, or one we mint) and a `status`, message content is always a list of typed parts,
and extra keys a client sent (`phase`, `namespace`…) are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from app.errors import BadRequestError, NotFoundError
from app.ids import new_item_id
from app.schemas.requests import (
    CompactionTriggerItem,
    ConcreteItem,
    CustomToolCallOutputItem,
    FunctionCallOutputItem,
    HostedItem,
    InputFile,
    InputImage,
    ItemReference,
    MessageItem,
    ReasoningItem,
)
from app.store.contexts import StoredItem
from app.store.responses import ResponseStore


def _check_parts(parts: list[Any], role: str, where: str) -> None:
    for index, part in enumerate(parts):
        at = f"{where}[{index}]"
        if isinstance(part, InputImage | InputFile) and role != "user":
            raise BadRequestError(
                f"Invalid '{at}': {part.type} is only allowed in user messages.", param=at
            )
        if isinstance(part, InputImage):
            _check_image(part, at)
        elif isinstance(part, InputFile):
            _check_file(part, at)


# OpenAI's limits for inline content: 20 MB per image, 50 MB per file (as base64 text here).
MAX_IMAGE_CHARS = 20 * 1024 * 1024 * 4 // 3
MAX_FILE_CHARS = 50 * 1024 * 1024 * 4 // 3


def _check_image(part: InputImage, at: str) -> None:
    url = part.image_url
    if url is None:
        raise BadRequestError(
            f"Invalid '{at}': give image_url (a URL or a data: URI); this gateway has no "
            "Files API, so file_id cannot be resolved.",
            param=f"{at}.file_id" if part.file_id is not None else f"{at}.image_url",
        )
    if url.startswith("data:"):
        if not url.startswith("data:image/") or ";base64," not in url[:100]:
            raise BadRequestError(
                f"Invalid '{at}.image_url': a data URI must be 'data:image/<type>;base64,…'.",
                param=f"{at}.image_url",
                code="invalid_image_url",
            )
        if len(url) > MAX_IMAGE_CHARS:
            raise BadRequestError(
                f"Invalid '{at}.image_url': the image is larger than 20 MB.",
                param=f"{at}.image_url",
                code="image_too_large",
            )
    elif not url.startswith(("http://", "https://")):
        raise BadRequestError(
            f"Invalid '{at}.image_url': expected an http(s) URL or a data: URI.",
            param=f"{at}.image_url",
            code="invalid_image_url",
        )


def _check_file(part: InputFile, at: str) -> None:
    if part.file_data is None and part.file_url is not None:
        # Passed on to models whose upstream fetches it (the Responses backends); refused for
        # the others in `check_file_urls`, once the model is known.
        if not part.file_url.startswith(("http://", "https://")):
            raise BadRequestError(
                f"Invalid '{at}.file_url': expected an http(s) URL.", param=f"{at}.file_url"
            )
        return
    if part.file_data is None:
        raise BadRequestError(
            f"Invalid '{at}': give file_data (base64 or a data: URI), or file_url for a model "
            "whose upstream fetches it; file_id is not supported (this gateway has no Files "
            "API).",
            param=f"{at}.file_id" if part.file_id is not None else f"{at}.file_data",
        )
    if len(part.file_data) > MAX_FILE_CHARS:
        raise BadRequestError(
            f"Invalid '{at}.file_data': the file is larger than 50 MB.",
            param=f"{at}.file_data",
            code="file_too_large",
        )


def check_item(
    item: ConcreteItem | ItemReference | CompactionTriggerItem, index: int, param: str = "input"
) -> None:
    """Reject content this gateway cannot pass on, naming the param."""
    where = f"{param}[{index}]"
    if isinstance(item, CompactionTriggerItem):  # one that closes the input was taken off
        raise BadRequestError(
            "The 'compaction_trigger' item must be the final input item.", param=where
        )
    item_id = item.id
    if item_id is not None and "\x00" in item_id:  # PostgreSQL's text cannot hold it
        raise BadRequestError(
            f"Invalid '{where}.id': an id cannot contain U+0000 (NUL).",
            param=f"{where}.id",
            code="invalid_value",
        )
    if isinstance(item, MessageItem) and isinstance(item.content, list):
        _check_parts(item.content, item.role, f"{where}.content")
    elif isinstance(item, FunctionCallOutputItem | CustomToolCallOutputItem) and isinstance(
        item.output, list
    ):
        _check_parts(item.output, "user", f"{where}.output")


def _parts(content: str | list[Any], role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if role == "assistant":
            return [{"type": "output_text", "text": content, "annotations": [], "logprobs": []}]
        return [{"type": "input_text", "text": content}]
    parts = []
    for part in content:
        data = part.model_dump(mode="json", exclude_none=True)
        if data["type"] == "output_text":
            data.setdefault("logprobs", [])
        parts.append(data)
    return parts


def canonical_item(item: ConcreteItem) -> dict[str, Any]:
    """The stored form of an input item; a stored item replayed by a client compares equal."""
    data = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["id"] = item.id or new_item_id(item.type)
    if isinstance(item, MessageItem):
        data["content"] = _parts(item.content, item.role)
    elif isinstance(item, FunctionCallOutputItem | CustomToolCallOutputItem) and isinstance(
        item.output, list
    ):
        data["output"] = _parts(item.output, "user")
    if not isinstance(item, ReasoningItem | HostedItem):  # hosted items stay as sent
        data.setdefault("status", "completed")
    return data


def user_text_item(text: str) -> dict[str, Any]:
    """The stored form of a plain-string `input`: what `canonical_item` makes of a user
    message with that text, without building and dumping the model (every such request)."""
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
        "id": new_item_id("message"),
        "status": "completed",
    }


async def resolve_items(
    store: ResponseStore,
    items: Sequence[ConcreteItem | ItemReference | CompactionTriggerItem],
    project: str,
    *,
    reuse: bool,
    param: str,
) -> list[StoredItem | dict[str, Any]]:
    """Validate items, give them their stored form, resolve item references, and — with
    `reuse` — point replayed items at the row already stored for them (same id, same content)
    instead of storing them twice. Only ids the client chose can name stored items."""
    for index, item in enumerate(items):
        check_item(item, index, param)
    checked = cast("Sequence[ConcreteItem | ItemReference]", items)  # no trigger is left
    canonical = [
        item if isinstance(item, ItemReference) else canonical_item(item) for item in checked
    ]
    references = {item.id for item in checked if isinstance(item, ItemReference)}
    replayed = {item.id for item in checked if not isinstance(item, ItemReference) and item.id}
    stored = await store.find_items(references | (replayed if reuse else set()), project)
    resolved: list[StoredItem | dict[str, Any]] = []
    for index, entry in enumerate(canonical):
        if isinstance(entry, ItemReference):
            candidates = stored.get(entry.id, [])
            if not candidates:
                raise NotFoundError(
                    f"Item with id '{entry.id}' not found.", param=f"{param}[{index}].id"
                )
            resolved.append(candidates[-1])
            continue
        same = next((c for c in reversed(stored.get(entry["id"], [])) if c.data == entry), None)
        resolved.append(same if same is not None else entry)
    return resolved


def check_unique_ids(
    context: Iterable[str], entries: list[StoredItem | dict[str, Any]], param: str
) -> None:
    """Refuse, as OpenAI does, input that repeats an item already in the context it joins
    (the previous response's turns, the conversation) or in itself: a replayed output item
    with `previous_response_id`, an `item_reference` to a conversation's own item. Item ids are
    then unique within a context and a conversation, so an `after=<id>` cursor names one
    position. Repeats already inside a stored context are not the client's doing: not checked."""
    seen = set(context)
    for entry in entries:
        item_id = (entry.data if isinstance(entry, StoredItem) else entry)["id"]
        if item_id in seen:
            raise BadRequestError(
                f"Duplicate item found with id {item_id}. Remove duplicate items from your "
                "input and try again.",
                param=param,
            )
        seen.add(item_id)
