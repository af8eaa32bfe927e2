"""API keys and who is calling: projects (tenants), key creation and revocation, and the
resolution of an `Authorization` header to a `Principal`.

A key is `sk-rg-` + 43 random URL-safe characters (256 bits). Only its SHA-256 is stored, with
its first 12 characters to tell keys apart. A fast hash is enough for random keys of this length
(there is no dictionary to try), and lets verification be one indexed lookup; a slow password
hash would cost milliseconds on every request.

Lookups are cached per process for `cache_seconds` (valid and invalid keys alike), so a revoked
key stops working on every replica within that bound, and a flood of bad keys cannot hammer the
database. Open mode (no key needed, everything in project '') holds only while no key was ever
created and no admin key is configured, and only for loopback clients.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass

from app.errors import AuthenticationError, BadRequestError, NotFoundError
from app.store.database import Database
from app.store.keys import KeyStore, StoredKey

KEY_PREFIX = "sk-rg-"
VISIBLE_CHARS = 12
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. `project` scopes every stored object it can see."""

    project: str
    key_id: str | None = None
    rpm: int | None = None
    tpm: int | None = None


OPEN = Principal(project="")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: StoredKey
    secret: str  # shown once, never stored


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_object(key: StoredKey, secret: str | None = None) -> dict[str, object]:
    """The admin API's (and the CLI's) view of a key; the secret only right after creation."""
    body: dict[str, object] = {
        "id": key.id,
        "object": "api_key",
        "project": key.project,
        "name": key.name,
        "prefix": key.prefix,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "created_at": int(key.created_at),
        "revoked_at": int(key.revoked_at) if key.revoked_at is not None else None,
    }
    if secret is not None:
        body["key"] = secret
    return body


@functools.lru_cache(maxsize=1024)  # asked on every request in open mode: parse each host once
def is_loopback(host: str | None) -> bool:
    """A loopback address or name. None (a Unix socket) counts as local."""
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _invalid_key(secret: str) -> AuthenticationError:
    shown = f"{secret[:VISIBLE_CHARS]}…" if len(secret) > VISIBLE_CHARS else "(hidden)"
    return AuthenticationError(f"Incorrect API key provided: {shown}.")


class KeyService:
    def __init__(
        self, database: Database, *, admin_key: str | None = None, cache_seconds: float = 5.0
    ) -> None:
        self._store = KeyStore(database)
        self._admin_key = admin_key
        self._admin_key_set = admin_key is not None
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}
        self._keys_exist: tuple[float, bool] = (0.0, False)

    # --- administration ----------------------------------------------------------------------

    async def create(
        self,
        project: str,
        *,
        name: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> CreatedKey:
        if not PROJECT_NAME.match(project):
            raise BadRequestError(
                "Invalid project name: use 1-64 letters, digits, '_', '.' or '-', starting with "
                "a letter or digit.",
                param="project",
                code="invalid_value",
            )
        for param, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise BadRequestError(
                    f"Invalid '{param}': must be at least 1 (omit it for no limit).",
                    param=param,
                    code="invalid_value",
                )
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = StoredKey(
            id=f"key_{secrets.token_hex(12)}",
            project=project,
            name=name,
            prefix=secret[:VISIBLE_CHARS],
            rpm=rpm,
            tpm=tpm,
            created_at=time.time(),
            revoked_at=None,
        )
        await self._store.insert_key(key, hash_key(secret))
        self._keys_exist = (0.0, True)
        return CreatedKey(key, secret)

    async def list(self, project: str | None = None) -> list[StoredKey]:
        return await self._store.list_keys(project)

    async def revoke(self, key_id: str) -> StoredKey:
        key = await self._store.revoke(key_id)
        if key is None:
            raise NotFoundError(f"API key with id '{key_id}' not found.", param="key_id")
        self._cache.clear()  # this replica at once; the others within cache_seconds
        return key

    async def keys_exist(self) -> bool:
        now = time.monotonic()
        expires, exist = self._keys_exist
        if exist or now < expires:
            return exist  # keys never stop existing (revoked ones count)
        exist = await self._store.count_keys() > 0
        self._keys_exist = (now + self._cache_seconds, exist)
        return exist

    # --- authentication ----------------------------------------------------------------------

    async def authenticate(self, authorization: str | None, client_host: str | None) -> Principal:
        """The principal of a request from its `Authorization` header, or `AuthenticationError`
        (401 `invalid_api_key`)."""
        if not self._admin_key_set and not await self.keys_exist():
            if not is_loopback(client_host):
                raise AuthenticationError(
                    "This gateway has no API keys yet, so it only serves clients on this "
                    "machine. Create one with `responses-gateway keys create --project NAME`."
                )
            return OPEN
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationError(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        key = await self._lookup(secret)
        if key is None or key.revoked_at is not None:
            raise _invalid_key(secret)
        return Principal(key.project, key.id, key.rpm, key.tpm)

    def authenticate_admin(self, authorization: str | None) -> None:
        """Pass if the header carries the admin key (`GATEWAY_ADMIN_KEY`), else 401."""
        if self._admin_key is None:
            raise AuthenticationError(
                "The admin API is disabled: set GATEWAY_ADMIN_KEY to enable it."
            )
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            secret.strip().encode(), self._admin_key.encode()
        ):
            raise AuthenticationError("Incorrect admin key provided.")

    async def _lookup(self, secret: str) -> StoredKey | None:
        digest = hash_key(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now < cached[0]:
            return cached[1]
        key = await self._store.find_by_hash(digest)
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[digest] = (now + self._cache_seconds, key)
        return key
