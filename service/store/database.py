"""The connection side of the store: the engine, schema creation, transactions and shared row reads.

Each store (catalog, API keys, jobs, shards) is a layer over this one class, so all of them share one
engine, one pool and one per-thread read connection.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.errors import NotFound
from service.store import migrations
from service.store.records import utcnow
from service.store.schema import make_engine

log = logging.getLogger(__name__)


# The per-request reads (a row by id, the key checks) are built once: building and cache-keying a
# SELECT costs more than SQLite takes to answer it, and every authenticated request makes two of them.
@functools.cache
def _select_by_id(table: sa.Table, *, with_owner: bool) -> sa.Select[Any]:
    query = sa.select(table).where(table.c.id == sa.bindparam("row_id"))
    return query.where(table.c.owner == sa.bindparam("owner")) if with_owner else query


class Database:
    """One SQL database over SQLAlchemy (SQLite by default, PostgreSQL in deployments); thread-safe."""

    def __init__(self, database_url: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.database_url = database_url
        # Tells the time of every timestamp, lease and age the stores compute; tests pass their own.
        self.now = clock
        self.engine: Engine = make_engine(database_url)
        self._shared = threading.local()  # the connection of an open `reading()` block, per thread

    # ---- schema and health -------------------------------------------------------------------

    def create_schema(self) -> None:
        """Bring the database to the newest schema revision (service/store/migrations); idempotent."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # An API and a worker starting together must not both migrate: the second waits here, then
                # finds the database at head. The lock ends with the transaction the upgrade runs in.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7270279)"))
            elif conn.dialect.name == "sqlite":
                # The same for SQLite: take the write lock before reading the schema's revision (the
                # second process waits up to busy_timeout), and make the upgrade one transaction.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            migrations.upgrade(conn)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Reads made inside (in this thread) share one connection: one pool checkout, one liveness ping.

        For a request that makes several point reads (the caller's key, then the row): on PostgreSQL each
        checkout costs a round trip of its own. Writes keep their own transactions.
        """
        if getattr(self._shared, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            self._shared.conn = conn
            try:
                yield
            finally:
                self._shared.conn = None

    def _connect(self) -> AbstractContextManager[Connection]:
        shared: Connection | None = getattr(self._shared, "conn", None)
        return nullcontext(shared) if shared is not None else self.engine.connect()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- shared row helpers ------------------------------------------------------------------

    def _get(self, table: sa.Table, row_id: str, owner: str | None) -> Any:
        query = _select_by_id(table, with_owner=owner is not None)
        with self._connect() as conn:
            params = {"row_id": row_id} if owner is None else {"row_id": row_id, "owner": owner}
            return conn.execute(query, params).mappings().first()

    def _list(self, table: sa.Table, owner: str) -> list[Any]:
        query = sa.select(table).where(table.c.owner == owner).order_by(table.c.seq.desc())
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings().all())

    def _delete(self, table: sa.Table, row_id: str, owner: str, noun: str) -> None:
        query = table.delete().where(table.c.id == row_id, table.c.owner == owner)
        with self._tx() as conn:
            if conn.execute(query).rowcount != 1:
                raise NotFound(f"{noun} {row_id!r} does not exist")
        log.info("%s %s deleted (owner %s)", noun, row_id, owner)
