"""Settings (environment) and the models file (YAML) — the two inputs of a gateway process.

`Settings` reads the environment once, in `cli`/`main`; nothing here runs at import. The models
file is parsed into pydantic models after `${VAR}` expansion; every error names the line and the
field, so a typo stops the server with a message the user can act on.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./responses-gateway.db"
OPENAI_BASE_URL = "https://api.openai.com/v1"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"


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
    # WebSocket mode (`/v1/responses` over a WebSocket): how long one connection may stay
    # open (OpenAI's limit: 60 minutes), and how many lanes (`stream_id`) may have responses
    # running or queued on one connection at once.
    gateway_websocket_max_seconds: float = Field(default=3600.0, gt=0)
    gateway_websocket_max_streams: int = Field(default=8, ge=1)
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
    # Where `serve` runs those jobs: `inline`, in the HTTP process's event loop; `process`, a
    # child `responses-gateway worker` at a lower CPU priority (HTTP requests preempt job
    # execution on a shared core, and jobs can use another core); `auto`, process on PostgreSQL
    # and inline on SQLite (whose notifications are in-process only, and whose writes lock
    # across processes). README "The process model" says why `inline` is the default.
    gateway_worker_process: Literal["auto", "process", "inline"] = "inline"
    # The built-in `echo` backend is routable under this name (a testing aid, no network);
    # an empty value switches it off. A model of the same name in the models file wins.
    gateway_echo_model: str = "echo"
    # Quick start without a models file (ignored when GATEWAY_CONFIG is set): see `quick_start`.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: SecretStr | None = None
    azure_openai_deployments: str = ""
    azure_openai_api_version: str | None = None
    # Tenants (README "Keys, projects and limits"). The admin key guards `/admin/`; with it set,
    # or with any API key in the database, every `/v1` request needs a key.
    gateway_admin_key: SecretStr | None = None
    # How long a replica trusts what it looked up about a key: a revocation takes effect on
    # every replica within this many seconds.
    gateway_key_cache_seconds: float = Field(default=5.0, ge=0)
    gateway_max_input_items: int = Field(default=2048, ge=1)
    # Item references the per-process cache of recent contexts holds (0 turns it off). An item
    # costs about 1–2 KB of memory, so the default keeps the cache within some 30 MB however
    # many requests a process serves; depth-1000 chains (2,000 references a turn) still hit,
    # and only the newest turn of a chain is worth keeping.
    gateway_context_cache_items: int = Field(default=20_000, ge=0)
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

    @field_validator(
        "gateway_config",
        "openai_api_key",
        "openai_base_url",
        "azure_openai_endpoint",
        "azure_openai_api_key",
        "azure_openai_api_version",
        mode="before",
    )
    @classmethod
    def treat_empty_as_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("gateway_worker_process", mode="before")
    @classmethod
    def accept_boolean_worker_process(cls, value: object) -> object:
        if isinstance(value, bool):
            return "process" if value else "inline"
        if isinstance(value, str):
            words = {"true": "process", "1": "process", "false": "inline", "0": "inline"}
            return words.get(value.strip().lower(), value.strip().lower())
        return value

    @property
    def worker_in_child(self) -> bool:
        """Whether `serve` runs background jobs in a child worker process (not in its loop)."""
        if self.gateway_worker_concurrency == 0 or self.gateway_worker_process == "inline":
            return False
        return self.gateway_worker_process == "process" or self.database_url.startswith(
            "postgresql"
        )

    def as_environment(self) -> dict[str, str]:
        """These settings as the environment variables that reproduce them in a child process
        (secrets included: the child is ours; an unset value is written empty, which every
        optional field reads as unset, so the parent's own environment cannot override it)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is None:
                env[name.upper()] = ""
            elif isinstance(value, bool):
                env[name.upper()] = "true" if value else "false"
            else:
                env[name.upper()] = str(value)
        return env

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


BackendKind = Literal["chat_completions", "responses", "openai", "azure", "echo"]


def _field_error(field: str, message: str) -> PydanticCustomError:
    # Model-level checks have no location of their own; `field` in the context lets the loader
    # name the field (and its line) all the same.
    return PydanticCustomError("invalid_field", message, {"field": field})


class ModelConfig(BaseModel):
    """One routable model (or, when `name` ends in `*`, a prefix rule): what clients send as
    `model`, where it goes, and how hard to try."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    backend: BackendKind
    base_url: str | None = None  # chat_completions, responses; openai defaults to OpenAI's
    api_key: SecretStr | None = None
    upstream_model: str | None = None  # for azure: the deployment name
    aliases: list[str] = Field(default_factory=list)
    context_window: int | None = Field(default=None, gt=0)
    # Whether the model reasons (asks the upstream for `reasoning.encrypted_content` so that
    # reasoning carries across turns). Unset: guessed from the name for openai/azure.
    reasoning: bool | None = None
    # Azure OpenAI: the resource endpoint; no api_version (or "preview") means the v1 API.
    endpoint: str | None = None
    api_version: str | None = None
    api: Literal["responses", "chat_completions"] = "responses"
    auth: Literal["api_key", "entra_id"] | None = None  # default: api_key if one is set
    entra_scope: str = ENTRA_SCOPE
    # Seconds. `timeout` bounds the wait for each read from the upstream (so a long stream that
    # keeps sending is fine); `connect_timeout` bounds opening the connection.
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=256, gt=0)
    # Retries of connection errors, 429 and 5xx before any output; then `fallbacks`, in order.
    max_retries: int = Field(default=2, ge=0, le=10)
    fallbacks: list[str] = Field(default_factory=list)
    # Requests in flight to this model at once; more wait up to `queue_timeout` seconds for a
    # slot, then get a 429 (or go to a fallback).
    max_concurrency: int | None = Field(default=None, gt=0)
    queue_timeout: float = Field(default=30.0, ge=0)
    # Hosted tools (web_search, file_search, mcp…) sent to a backend that cannot run them:
    # `reject` answers 400; `drop` leaves them out of the upstream call and says so in the
    # `x-gateway-dropped-tools` header (Codex CLI sends web_search on every call).
    hosted_tools: Literal["reject", "drop"] = "reject"

    @field_validator("api_version", mode="before")
    @classmethod
    def accept_unquoted_date(cls, value: object) -> object:
        # YAML reads `api_version: 2024-10-21` as a date; what Azure wants is its text.
        return value.isoformat() if isinstance(value, datetime.date) else value

    @field_validator("base_url", "endpoint")
    @classmethod
    def require_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def require_backend_fields(self) -> ModelConfig:
        needs = {"chat_completions": "base_url", "responses": "base_url", "azure": "endpoint"}
        field = needs.get(self.backend)
        if field and getattr(self, field) is None:
            raise _field_error(field, f"required for backend {self.backend}")
        if self.backend == "azure" and self.azure_auth == "api_key" and self.api_key is None:
            raise _field_error("api_key", "required for auth api_key")
        if self.is_rule and (self.upstream_model or self.aliases):
            field = "upstream_model" if self.upstream_model else "aliases"
            raise _field_error(field, "a prefix rule takes the upstream model from the name")
        if "*" in self.name[:-1]:
            raise _field_error("name", "'*' may only end a prefix rule, as in 'ollama/*'")
        return self

    @property
    def is_rule(self) -> bool:
        return self.name.endswith("*")

    @property
    def target_model(self) -> str:
        return self.upstream_model or self.name

    @property
    def azure_auth(self) -> str:
        return self.auth or ("api_key" if self.api_key is not None else "entra_id")

    @property
    def url(self) -> str:
        """Where the upstream is, for humans (no credentials)."""
        if self.backend == "echo":
            return "(built in, no network)"
        if self.backend == "azure":
            return public_url(self.endpoint or "") + f" ({self.azure_auth}, {self.api})"
        return public_url(self.base_url or OPENAI_BASE_URL)


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def require_unique_names(cls, value: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in value:
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(f"model name {name!r} appears more than once")
                seen.add(name)
        for index, model in enumerate(value):
            for position, fallback in enumerate(model.fallbacks):
                exact = {m.name for m in value if not m.is_rule}
                if fallback not in exact or fallback == model.name:
                    raise PydanticCustomError(
                        "invalid_field",
                        "'{name}' is not another model named in this file",
                        {"name": fallback, "field": f"[{index}].fallbacks[{position}]"},
                    )
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
            field = (error.get("ctx") or {}).get("field")
            if field:
                path += field if field.startswith("[") else f".{field}"
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


def quick_start(settings: Settings) -> list[ModelConfig]:
    """Routes from the environment, for a gateway started without a models file:
    `OPENAI_API_KEY` routes every other model name to OpenAI (a catch-all `*` rule: OpenAI itself
    answers 404 for names it does not know); `AZURE_OPENAI_ENDPOINT` (+ `AZURE_OPENAI_API_KEY`,
    or Entra ID without one) routes each name of `AZURE_OPENAI_DEPLOYMENTS` to that deployment."""
    models: list[ModelConfig] = []
    deployments = [d.strip() for d in settings.azure_openai_deployments.split(",") if d.strip()]
    if settings.azure_openai_endpoint:
        for deployment in deployments:
            models.append(
                ModelConfig(
                    name=deployment,
                    backend="azure",
                    endpoint=settings.azure_openai_endpoint,
                    api_key=settings.azure_openai_api_key,
                    api_version=settings.azure_openai_api_version,
                )
            )
    if settings.openai_api_key is not None:
        models.append(
            ModelConfig(
                name="*",
                backend="openai",
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
            )
        )
    return models


def quick_start_warnings(settings: Settings) -> list[str]:
    """What in the quick-start environment routes nothing, said with what to set; `serve` logs
    each as a warning and `check-config` prints them. Without these, an Azure endpoint with no
    deployment named would leave the gateway up with no Azure model, and no word why."""
    if settings.gateway_config is not None:
        return []
    deployments = settings.azure_openai_deployments.strip(" ,")
    if settings.azure_openai_endpoint and not deployments:
        return [
            "AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_DEPLOYMENTS is empty, so no Azure "
            "model is routed: set AZURE_OPENAI_DEPLOYMENTS to the deployment names to serve, "
            "comma-separated (e.g. AZURE_OPENAI_DEPLOYMENTS=gpt-4o-prod,o4-mini), or use a "
            "models file (GATEWAY_CONFIG)."
        ]
    if deployments and not settings.azure_openai_endpoint:
        return [
            "AZURE_OPENAI_DEPLOYMENTS is set but AZURE_OPENAI_ENDPOINT is not, so no Azure model "
            "is routed: set AZURE_OPENAI_ENDPOINT to the resource "
            "(https://<resource>.openai.azure.com)."
        ]
    return []


def load_routing(settings: Settings) -> ModelsFile:
    """The routing table `serve` and `check-config` use: the models file (or, without one, the
    quick-start environment), plus the built-in echo model unless switched off or taken."""
    models = list(load_models_file(settings.gateway_config).models)
    if settings.gateway_config is None:
        models += quick_start(settings)
    taken = {name for model in models for name in (model.name, *model.aliases)}
    echo = settings.gateway_echo_model
    if echo and echo not in taken:
        models.append(ModelConfig(name=echo, backend="echo"))
    return ModelsFile(models=models)


def describe_routes(models: ModelsFile) -> Iterator[str]:
    """Lines of the routing table as `check-config` and `serve` print it."""
    if not models.models:
        yield "routing table is EMPTY: no models file (set GATEWAY_CONFIG) or it lists no models"
        return
    width = max(len(m.name) for m in models.models)
    for model in models.models:
        target = "<rest of the name>" if model.is_rule else model.target_model
        notes = [f"aliases={','.join(model.aliases)}"] if model.aliases else []
        if model.fallbacks:
            notes.append(f"fallbacks={','.join(model.fallbacks)}")
        if model.max_concurrency:
            notes.append(f"max_concurrency={model.max_concurrency}")
        if model.api_key:
            notes.append("(api key set)")
        yield " ".join(
            [f"{model.name:<{width}}  -> {model.backend} {model.url}", f"model={target}", *notes]
        )
