"""`parry keys create | list | revoke`: manage the API keys kept in the database (operator side).

The parser is in service/cli/main.py, so the client install builds it without the store. These commands
talk to the database named by the settings (PARRY_DATABASE_URL or the SQLite file in
PARRY_DATA_DIR), not to a running server: a running API sees a new or revoked key on its next request.
A new key is printed once; only its sha256 is stored.
"""

from __future__ import annotations

import sys

from service.auth import LOCAL_OWNER, hash_key, new_api_key
from service.errors import NotFound
from service.settings import Settings, get_settings
from service.store.jobs import JobStore


def _store(settings: Settings | None = None) -> JobStore:
    store = JobStore((settings or get_settings()).resolved_database_url)
    store.create_schema()
    return store


def create(*, name: str) -> int:
    store = _store()
    try:
        was_open = not store.has_api_keys()
        key = new_api_key()
        record = store.add_api_key(name=name, key_sha256=hash_key(key))
    finally:
        store.dispose()
    print(key)  # noqa: T201 - the one output a script captures
    _err(
        f"created API key {record.id}{f' ({record.name})' if record.name else ''}; it is shown only this once"
    )
    if was_open:
        _err(
            "this is the first key: the API now needs a key on every /v1 request "
            f"(what was made without one belongs to '{LOCAL_OWNER}' and is not visible with it)"
        )
    return 0


def list_keys() -> int:
    store = _store()
    try:
        records = store.list_api_keys()
    finally:
        store.dispose()
    if not records:
        _err("no API keys in the database (see also PARRY_API_KEYS / PARRY_API_KEYS_FILE)")
        return 0
    for r in records:
        revoked = f"revoked {r.revoked_at:%Y-%m-%d %H:%M:%S}Z" if r.revoked_at else "active"
        print(f"{r.id}\t{r.name or '-'}\tcreated {r.created_at:%Y-%m-%d %H:%M:%S}Z\t{revoked}")  # noqa: T201
    return 0


def revoke(key_id: str) -> int:
    store = _store()
    try:
        record = store.revoke_api_key(key_id)
    except NotFound as exc:
        _err(f"parry: {exc}")
        return 2
    finally:
        store.dispose()
    _err(f"revoked API key {record.id} (at {record.revoked_at:%Y-%m-%d %H:%M:%S}Z)")
    return 0


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
