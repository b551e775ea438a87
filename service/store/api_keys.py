"""API keys kept in the database (hashed; `service/auth.py` makes and checks them)."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from service.errors import NotFound
from service.store.database import Database
from service.store.records import ApiKeyRecord, new_id, record_from_row
from service.store.schema import api_keys_table

log = logging.getLogger(__name__)

_ANY_API_KEY = sa.select(api_keys_table.c.seq).limit(1)
_API_KEY_BY_HASH = sa.select(api_keys_table).where(api_keys_table.c.key_sha256 == sa.bindparam("key_sha256"))


class ApiKeyStore(Database):
    """API keys: add, list, look up by hash, revoke."""

    # ---- API keys (service/auth.py hashes and checks them) --------------------------------------

    def add_api_key(self, *, name: str, key_sha256: str) -> ApiKeyRecord:
        row: dict[str, Any] = {
            "id": new_id("key"),
            "name": name,
            "key_sha256": key_sha256,
            "created_at": self.now(),
            "revoked_at": None,
        }
        with self._tx() as conn:
            conn.execute(api_keys_table.insert().values(**row))
        log.info("API key %s (%s) created", row["id"], name)
        return ApiKeyRecord(**row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        query = sa.select(api_keys_table).order_by(api_keys_table.c.seq)
        with self.engine.connect() as conn:
            return [record_from_row(ApiKeyRecord, row) for row in conn.execute(query).mappings()]

    def api_key_by_hash(self, key_sha256: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not."""
        with self._connect() as conn:
            row = conn.execute(_API_KEY_BY_HASH, {"key_sha256": key_sha256}).mappings().first()
        return None if row is None else record_from_row(ApiKeyRecord, row)

    def has_api_keys(self) -> bool:
        """Whether any key was ever made; revoked ones count, so revoking the last key never opens the API."""
        with self._connect() as conn:
            return conn.execute(_ANY_API_KEY).first() is not None

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key from now on; `NotFound` for an unknown id. Revoking twice keeps the first time."""
        t = api_keys_table.c
        with self._tx() as conn:
            conn.execute(
                api_keys_table.update()
                .where(t.id == key_id, t.revoked_at.is_(None))
                .values(revoked_at=self.now())
            )
            row = conn.execute(sa.select(api_keys_table).where(t.id == key_id)).mappings().first()
        if row is None:
            raise NotFound(f"there is no API key {key_id!r}")
        log.info("API key %s revoked", key_id)
        return record_from_row(ApiKeyRecord, row)
