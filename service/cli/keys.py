"""`parry keys create | list | revoke`: manage the API keys kept in the database (operator side).

These commands talk to the database named by the settings (PARRY_DATABASE_URL or the SQLite file in
PARRY_DATA_DIR), not to a running server: a running API sees a new or revoked key on its next request.
A new key is printed once; only its sha256 is stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import TypeAlias

from service.auth import LOCAL_OWNER, hash_key, new_api_key
from service.errors import NotFound
from service.settings import Settings, get_settings
from service.store.jobs import JobStore

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # not subscriptable at run time


def add_keys_commands(commands: Commands) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list or revoke API keys (in the server's database)",
        description="Manage API keys. Each key owns what it creates; another key sees none of it.",
    )
    actions = keys.add_subparsers(title="actions", metavar="ACTION")
    create = actions.add_parser("create", help="make a new key and print it (once)")
    create.add_argument("--name", default="", help="a label to tell keys apart (default: the key's id)")
    create.set_defaults(run=_create)
    listing = actions.add_parser("list", help="list keys: id, name, created, revoked (never the keys)")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id; requests with it get 401 at once")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(run=_revoke)
    keys.set_defaults(run=lambda _args: _usage(keys))


def _store(settings: Settings | None = None) -> JobStore:
    store = JobStore((settings or get_settings()).resolved_database_url)
    store.create_schema()
    return store


def _create(args: argparse.Namespace) -> int:
    store = _store()
    try:
        was_open = not store.has_api_keys()
        key = new_api_key()
        record = store.add_api_key(name=args.name or "", key_sha256=hash_key(key))
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


def _list(_args: argparse.Namespace) -> int:
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


def _revoke(args: argparse.Namespace) -> int:
    store = _store()
    try:
        record = store.revoke_api_key(args.key_id)
    except NotFound as exc:
        _err(f"parry: {exc}")
        return 2
    finally:
        store.dispose()
    _err(f"revoked API key {record.id} (at {record.revoked_at:%Y-%m-%d %H:%M:%S}Z)")
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
