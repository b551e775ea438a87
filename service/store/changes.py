"""The job change feed: which jobs changed, for readers that keep jobs in memory (the API's job cache).

Every change of a job's row (service/store/lifecycle.py) and every new job (`JobStore.create_job`) adds a
`job_changes` row in the same transaction, so a change and its feed row commit together or not at all.
`ChangeFeed.poll()` returns the ids of the jobs whose changes committed since its previous poll, and can
miss none, although feed rows may commit out of `seq` order:

- SQLite has one writer at a time, holding the write lock from its first write to its commit, so rows
  commit in `seq` order: a reader asks for `seq` above the highest it has seen.
- On PostgreSQL a row with a lower `seq` can commit after one with a higher, so each row carries its
  transaction's id (`txid`). A poll reads, in one snapshot, the rows whose `txid` is at least the
  previous poll's snapshot xmin (the oldest transaction still running then). Any transaction that was
  not visible to the previous poll was running or had not started, so its id is at least that xmin:
  every row that committed in between is read. Rows read before are read again while an old transaction
  keeps the xmin back; the feed remembers them and returns each once.

Processes that also want their own commits at once (the API, so that a cancel is visible to the next
request) register `on_commit`: the ids a transaction changed are handed to it as it commits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.store.schema import api_keys_table, job_changes_table

c = job_changes_table.c

# The changed ids of the open transaction, kept in the connection's `info` until it commits or rolls back.
_PENDING = "parry_changed_jobs"
# Engines with an `on_commit` listener: only their connections collect the changed ids.
_watched: weakref.WeakSet[Engine] = weakref.WeakSet()
# How many feed rows to keep. A reader reads its rows within one poll interval of their commit, so the
# only use of older rows is history; pruning goes by `seq` rather than time, which needs no clock.
KEEP_ROWS = 100_000

_CURRENT_TXID: sa.ColumnElement[int] = sa.literal_column("pg_current_xact_id()::text::bigint")
_SNAPSHOT_XMIN = sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
_PG_ROWS = sa.text(
    "SELECT s.xmin, c.seq, c.job_id, c.txid FROM"
    " (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) AS s"
    " LEFT JOIN job_changes AS c ON c.txid >= :since"
)
_MAX_SEQ = sa.select(sa.func.coalesce(sa.func.max(c.seq), 0))
_ROWS_AFTER = sa.select(c.seq, c.job_id).where(c.seq > sa.bindparam("since")).order_by(c.seq)
# Keys are only ever added and revoked (never deleted, never un-revoked), so these two counts change
# with every change of the table.
_KEYS_SIGNATURE = sa.select(sa.func.count(), sa.func.count(api_keys_table.c.revoked_at))
_PRUNE = job_changes_table.delete().where(
    c.seq <= sa.select(sa.func.max(c.seq)).scalar_subquery() - sa.bindparam("keep")
)


def record(conn: Connection, job_id: str, *, now: datetime) -> None:
    """Add the feed row of a change of `job_id`, in the transaction on `conn` that makes the change."""
    values: dict[str, object] = {"job_id": job_id, "changed_at": now}
    if conn.dialect.name == "postgresql":
        values["txid"] = _CURRENT_TXID
    conn.execute(job_changes_table.insert().values(**values))
    if conn.engine in _watched:
        conn.info.setdefault(_PENDING, []).append(job_id)


def on_commit(engine: Engine, listener: Callable[[list[str]], None]) -> None:
    """Call `listener` with the job ids a transaction on `engine` (in this process) changed, as it commits.

    It runs just before the database commits, so a reader in another thread may still read the old row
    and keep it; the feed reports the change again after the commit, which settles that case.
    """

    def committing(conn: Connection) -> None:
        changed = conn.info.pop(_PENDING, None)
        if changed:
            listener(changed)

    def rolling_back(conn: Connection) -> None:
        conn.info.pop(_PENDING, None)

    sa.event.listen(engine, "commit", committing)
    sa.event.listen(engine, "rollback", rolling_back)
    _watched.add(engine)


@dataclass(frozen=True)
class Poll:
    """What one poll found: the jobs changed since the previous poll, and the API keys' signature."""

    changed: list[str]
    keys: tuple[int, int]


class ChangeFeed:
    """One reader's position in the feed, on a connection of its own; not thread-safe (one poller).

    The first `poll()` only takes the position (a reader that starts keeps nothing older); each later one
    returns every change committed since the previous one began, each once.
    """

    def __init__(self, engine: Engine) -> None:
        self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        self._since: int | None = None
        self._seen: dict[int, int] = {}  # PostgreSQL: seq -> txid of rows a later poll may read again

    def poll(self) -> Poll:
        conn = self._conn
        if self._since is None:
            query = _SNAPSHOT_XMIN if self._postgres else _MAX_SEQ
            self._since = int(conn.execute(query).scalar_one())
            changed: list[str] = []
        elif self._postgres:
            changed = self._poll_postgres()
        else:
            rows = conn.execute(_ROWS_AFTER, {"since": self._since}).all()
            if rows:
                self._since = int(rows[-1].seq)
            changed = [row.job_id for row in rows]
        count, revoked = conn.execute(_KEYS_SIGNATURE).one()
        return Poll(changed=changed, keys=(int(count), int(revoked)))

    def _poll_postgres(self) -> list[str]:
        rows = self._conn.execute(_PG_ROWS, {"since": self._since}).all()
        xmin = int(rows[0].xmin)
        changed = []
        for row in rows:
            if row.seq is not None and row.seq not in self._seen:
                self._seen[row.seq] = row.txid
                changed.append(row.job_id)
        # Rows of transactions older than this snapshot's xmin are not asked for again.
        self._seen = {seq: txid for seq, txid in self._seen.items() if txid >= xmin}
        self._since = xmin
        return changed

    def prune(self, keep: int = KEEP_ROWS) -> None:
        """Delete all but the newest `keep` feed rows."""
        self._conn.execute(_PRUNE, {"keep": keep})

    def close(self) -> None:
        self._conn.close()
