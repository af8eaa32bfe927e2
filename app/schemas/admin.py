"""Wire models of the admin API (`/admin/`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=128)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
