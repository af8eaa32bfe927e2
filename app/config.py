"""Settings (environment) and the models file (YAML) — the two inputs of a gateway process.

`Settings` reads the environment once, in `cli`/`main`; nothing here runs at import. The models
file is parsed into pydantic models after `${VAR}` expansion; every error names the line and the
field, so a typo stops the server with a message the user can act on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./responses-gateway.db"


class Settings(BaseSettings):
    """Process settings; each field is the lower-case name of its environment variable."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    gateway_config: Path | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=0, le=65535)
    gateway_log_level: str = "info"
    # Upper bound on the JSON body of one request; OpenAI's own limit is in the same range.
    gateway_max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Seconds of upstream silence after which a stream gets an SSE keep-alive comment.
    gateway_sse_keepalive: float = Field(default=15.0, gt=0)
    # PostgreSQL connections one process keeps open (bursts may open half as many again).
    gateway_db_pool_size: int = Field(default=30, ge=1)
    # Background mode: jobs one process runs at once, the lease a running job holds (renewed
    # every third of it), attempts before a job whose process keeps dying is failed, how long
    # shutdown waits for running jobs before handing them to other replicas, how long stream
    # events of finished background responses are kept for re-streaming, and the fallback poll.
    gateway_worker_concurrency: int = Field(default=16, ge=0)
    gateway_job_lease_seconds: float = Field(default=30.0, gt=0)
    gateway_job_max_attempts: int = Field(default=3, ge=1)
    gateway_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    gateway_event_retention_seconds: float = Field(default=3600.0, ge=0)
    gateway_job_poll_seconds: float = Field(default=1.0, gt=0)
    # Tenants (README "Keys, projects and limits"). The admin key guards `/admin/`; with it set,
    # or with any API key in the database, every `/v1` request needs a key.
    gateway_admin_key: SecretStr | None = None
    # How long a replica trusts what it looked up about a key: a revocation takes effect on
    # every replica within this many seconds.
    gateway_key_cache_seconds: float = Field(default=5.0, ge=0)
    gateway_max_input_items: int = Field(default=2048, ge=1)
    # Retention: stored responses older than this are purged by the workers (0 keeps them).
    gateway_response_ttl_seconds: float = Field(default=0.0, ge=0)
    gateway_prune_seconds: float = Field(default=60.0, gt=0)
    # Usage rows (and the token counts limits see) are written in batches at most this old.
    gateway_usage_flush_seconds: float = Field(default=1.0, gt=0)
    # Observability: JSON log lines (or plain text), prompts in the log only if asked for, and
    # OpenTelemetry tracing (needs the `otel` extra).
    gateway_log_format: Literal["json", "text"] = "json"
    gateway_log_prompts: bool = False
    gateway_otel: Literal["none", "otlp", "console"] = "none"

    @field_validator("gateway_admin_key", mode="before")
    @classmethod
    def treat_empty_admin_key_as_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("gateway_config", mode="before")
    @classmethod
    def treat_empty_config_as_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def normalize_database_url(cls, value: str) -> str:
        """Accept the URLs users copy from elsewhere and pick the async driver for them."""
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "DATABASE_URL must be postgresql+asyncpg://… or sqlite+aiosqlite:///… "
                f"(got scheme {value.split(':', 1)[0]!r})"
            )
        return value


class ModelConfig(BaseModel):
    """One routable model: what clients send as `model`, and where it goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    backend: Literal["chat_completions"]
    base_url: str
    api_key: SecretStr | None = None
    upstream_model: str | None = None
    context_window: int | None = Field(default=None, gt=0)
    # Seconds. `timeout` bounds the wait for each read from the upstream (so a long stream that
    # keeps sending is fine); `connect_timeout` bounds opening the connection.
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=256, gt=0)

    @field_validator("base_url")
    @classmethod
    def require_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def target_model(self) -> str:
        return self.upstream_model or self.name


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def require_unique_names(cls, value: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in value:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} appears more than once")
            seen.add(model.name)
        return value


class ConfigError(Exception):
    """The models file cannot be used; the message names the file, line and field."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class _Located:
    value: Any
    line: int


def _expand(text: str, line: int, path: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"line {line}, field {path}: environment variable {name} is not set "
            f"(write ${{{name}:-}} to make it optional)"
        )

    return _VAR.sub(replace, text)


def _to_python(node: yaml.Node, path: str, env: dict[str, str], lines: dict[str, int]) -> Any:
    """Turn a composed YAML node into plain data, recording each path's line and expanding vars."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            result[key] = _to_python(value_node, f"{path}.{key}" if path else key, env, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(child, f"{path}[{index}]", env, lines)
            for index, child in enumerate(node.value)
        ]
    value = yaml.SafeLoader("").construct_object(node)
    if isinstance(value, str):
        return _expand(value, node.start_mark.line + 1, path, env)
    return value


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _line_for(path: str, lines: dict[str, int]) -> int | None:
    # A missing field has no line of its own: report the nearest enclosing node.
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("")


def parse_models_file(text: str, source: str, env: dict[str, str] | None = None) -> ModelsFile:
    """Parse the text of a models file. Raises `ConfigError` naming the line and field."""
    env = dict(os.environ) if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if root is None:
        return ModelsFile()
    lines: dict[str, int] = {}
    try:
        data = _to_python(root, "", env, lines)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: line 1: expected a mapping with a `models:` list")
    try:
        return ModelsFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = _loc_to_path(tuple(error["loc"]))
            line = _line_for(path, lines)
            where = f"line {line}, " if line else ""
            problems.append(f"{source}: {where}field {path or '(top level)'}: {error['msg']}")
        raise ConfigError("\n".join(problems)) from exc


def load_models_file(path: Path | None) -> ModelsFile:
    """Read the models file named by `GATEWAY_CONFIG`; no file configured means no models."""
    if path is None:
        return ModelsFile()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the models file: {exc.strerror}") from exc
    return parse_models_file(text, str(path))


def public_url(url: str) -> str:
    """A URL without its userinfo (credentials), for logs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe_routes(models: ModelsFile) -> Iterator[str]:
    """Lines of the routing table as `check-config` and `serve` print it."""
    if not models.models:
        yield "routing table is EMPTY: no models file (set GATEWAY_CONFIG) or it lists no models"
        return
    width = max(len(m.name) for m in models.models)
    for model in models.models:
        yield (
            f"{model.name:<{width}}  -> {model.backend} {public_url(model.base_url)} "
            f"model={model.target_model}" + (" (api key set)" if model.api_key else "")
        )
