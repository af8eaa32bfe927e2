"""Table definitions. Alembic migrations are the source of the schema in every database; these
classes must match the head revision (a test compares them).

Items are stored once, in `items`; a response refers to them by their surrogate `pk` in three
ordered lists:
- `history_pks`: the context inherited through `previous_response_id` (the previous response's
  history + input + output), copied forward at creation;
- `input_pks`: this request's own input;
- `output_pks`: what the model produced.

Why a stored history list rather than a recursive CTE over `previous_response_id`: loading the
context of turn N then costs two indexed queries (the response row, then its items by primary
key) whatever N is, and the chain is never walked again. The price is a list of integers per
response (8 bytes × context length, as JSON), small next to the items themselves. A response whose
predecessor is later deleted keeps a context that is stable and complete as far as items remain.
The public item `id` is not unique: clients choose ids too (Codex sends `msg_<uuid>` on every
replayed item), and a repeated id must never be a duplicate-key error.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Table, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not a BIGINT one.
PrimaryKey = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class ResponseRow(Base):
    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(256))
    previous_response_id: Mapped[str | None] = mapped_column(String(96))
    # Every field of the wire Response except `output`, which is assembled from `items`.
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    history_pks: Mapped[list[int]] = mapped_column(JSON)
    input_pks: Mapped[list[int]] = mapped_column(JSON)
    output_pks: Mapped[list[int]] = mapped_column(JSON)
    # The owning project (tenant); every lookup filters on it, so another project's id answers
    # exactly like an id that does not exist. '' is the open (key-less) mode.
    project: Mapped[str] = mapped_column(String(64), server_default="")
    background: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # Created with `stream: true`: only such background responses can be streamed again.
    stream: Mapped[bool] = mapped_column(Boolean, server_default=false())


class ItemRow(Base):
    __tablename__ = "items"

    pk: Mapped[int] = mapped_column(PrimaryKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(256), index=True)
    # The response whose request or output created the item; deleting it deletes the item.
    response_id: Mapped[str] = mapped_column(String(96), index=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    project: Mapped[str] = mapped_column(String(64), server_default="")


class JobRow(Base):
    """A background response's place in the durable queue (one per background response).

    `status`: queued → running → done. A running job belongs to `lease_owner` until
    `lease_expires_at`; the owner renews the lease while it works. A job whose lease expired
    (its process died) is claimed again by any worker, up to the attempt limit.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created_at", "status", "created_at"),)

    response_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), server_default="")
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    # The validated create request (without its input, which is stored as items).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The API key that created the job, for usage accounting (None in open mode).
    key_id: Mapped[str | None] = mapped_column(String(40))


class EventRow(Base):
    """Stream events of background responses created with `stream: true`, kept so that any
    replica can replay them (`starting_after`) and follow the live ones."""

    __tablename__ = "response_events"

    response_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    sequence_number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class ConversationRow(Base):
    """A conversation. Its items are stored once in `items` like any other; `next_position`
    hands out contiguous blocks of positions, so concurrent appends never interleave."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), server_default="")
    created_at: Mapped[int] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    next_position: Mapped[int] = mapped_column(Integer, server_default="0")


class ConversationItemRow(Base):
    __tablename__ = "conversation_items"

    conversation_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    item_pk: Mapped[int] = mapped_column(BigInteger)


# Retention purges by age.
Index("ix_responses_created_at", ResponseRow.created_at)


class ApiKeyRow(Base):
    """A gateway API key. Only a SHA-256 of the key is stored, with its first characters
    (`prefix`) so people can tell keys apart. Revoked keys stay, for the usage they own."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class RateWindowRow(Base):
    """Requests and tokens of one key in one fixed minute (`window` = its first second), shared
    by every replica: admitting a request is one UPSERT on this row."""

    __tablename__ = "rate_windows"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    requests: Mapped[int] = mapped_column(Integer, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")


class UsageRow(Base):
    """One generation: who asked (project, key), what ran (model, backend), what it cost."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_day_project", "day", "project"),)

    pk: Mapped[int] = mapped_column(PrimaryKey, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    day: Mapped[str] = mapped_column(String(10))  # UTC YYYY-MM-DD, grouped on as is
    project: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(40))
    response_id: Mapped[str | None] = mapped_column(String(96))
    model: Mapped[str] = mapped_column(String(256))
    backend: Mapped[str] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    reasoning_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))


responses_table = cast(Table, ResponseRow.__table__)
items_table = cast(Table, ItemRow.__table__)
jobs_table = cast(Table, JobRow.__table__)
events_table = cast(Table, EventRow.__table__)
conversations_table = cast(Table, ConversationRow.__table__)
conversation_items_table = cast(Table, ConversationItemRow.__table__)
api_keys_table = cast(Table, ApiKeyRow.__table__)
rate_windows_table = cast(Table, RateWindowRow.__table__)
usage_table = cast(Table, UsageRow.__table__)
