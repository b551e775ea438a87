"""API keys: who is calling, and whether the API may run without keys at all.

A key is a bearer token. Its owner (the owner of every model, dataset and job it creates) is the
key's id: `key_...` for keys made with `parry keys create`, `env_<hash prefix>` for keys given in
PARRY_API_KEYS / PARRY_API_KEYS_FILE. With no key configured anywhere the API is open and every
caller is the owner `local`; that is allowed only on a loopback address (`open_bind_problem`).

Imports neither FastAPI nor TensorFlow: `parry keys` and `parry serve` use it too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable

from service.settings import Settings
from service.store.jobs import JobStore

LOCAL_OWNER = "local"
KEY_PREFIX = "pk_"
KeyResolver = Callable[[str], str | None]


def new_api_key() -> str:
    """A fresh key: 256 random bits, url-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # A plain (unsalted, fast) sha256 is enough here: keys are 256-bit random tokens, not passwords, so
    # there is no dictionary to try and a slow hash would only slow every request. It also lets a
    # lookup go by hash, with no per-key salt to try.
    return hashlib.sha256(key.encode()).hexdigest()


def configured_env_keys(settings: Settings) -> list[str]:
    """The keys from PARRY_API_KEYS (comma-separated) and PARRY_API_KEYS_FILE (one per line, # comments)."""
    keys: list[str] = []
    if settings.api_keys is not None:
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    if settings.api_keys_file is not None:
        try:
            text = settings.api_keys_file.read_text()
        except OSError as exc:
            raise KeyConfigError(
                f"PARRY_API_KEYS_FILE {settings.api_keys_file} cannot be read: {exc}"
            ) from exc
        keys += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [k for k in keys if k]


class KeyConfigError(Exception):
    """The configured keys cannot be read; the message is one sentence."""


class KeyRing:
    """Checks presented keys against the environment's keys and the store's (revocation applies at once).

    Open mode lasts only while no key exists anywhere. Keys are never deleted, only revoked, so once a key
    has been seen the ring stays closed without asking the store again.
    """

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self._store = store
        self._env_owners = {hash_key(k): f"env_{hash_key(k)[:16]}" for k in configured_env_keys(settings)}
        self._closed = bool(self._env_owners)

    def is_open(self) -> bool:
        """True while no key is configured in the environment and none was ever created in the store."""
        if self._closed:
            return False
        if self._store.has_api_keys():
            self._closed = True  # only ever goes from False to True, so threads need no lock
            return False
        return True

    def owner_for(self, key: str) -> str | None:
        """The owner a request presenting `key` ("" for none) acts as; None when it must be refused (401)."""
        if self.is_open():
            return LOCAL_OWNER
        return self.owner_of(key) if key else None

    def owner_of(self, key: str) -> str | None:
        """The owner of a valid key; None for an unknown or revoked one."""
        digest = hash_key(key)
        record = self._store.api_key_by_hash(digest)
        if record is not None:
            return None if record.revoked else record.id
        return self._env_owners.get(digest)

    def resolver(self) -> KeyResolver | None:
        """What `app.state.key_resolver` holds for the UI: None in open mode, else `owner_of`."""
        return None if self.is_open() else self.owner_of


def bearer_token(authorization: str) -> str:
    """The key in an `Authorization: Bearer <key>` header value; "" for no header or another scheme."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address: treat it as one


def open_bind_problem(host: str, settings: Settings) -> str | None:
    """Why the API must not listen on `host` (one sentence), or None when it may.

    Without any API key the API is open to whoever reaches it, so it may only listen on loopback.
    """
    if is_loopback(host):
        return None
    try:
        has_env_keys = bool(configured_env_keys(settings))
    except KeyConfigError as exc:
        return str(exc)
    if has_env_keys:
        return None
    store = JobStore(settings.resolved_database_url)
    try:
        store.create_schema()
        if store.has_api_keys():
            return None
    finally:
        store.dispose()
    return (
        f"refusing to listen on {host} with no API key configured (anyone who reaches it could use the "
        "service): create one with `parry keys create`, set PARRY_API_KEYS, or bind to 127.0.0.1"
    )
