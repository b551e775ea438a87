"""The API's in-memory job snapshots: the JSON bodies `GET /v1/jobs/{id}` answers, kept fresh by the feed.

Clients poll job status all the time, and on PostgreSQL each read costs round trips (the pool's ping, the
key check, the row) and a thread hop, which on a busy machine put the p99 near 100 ms. This cache keeps
the serialized `JobOut` body and owner of recently read jobs, and the owner of recently presented keys; a
poller thread reads the store's change feed (service/store/changes.py) every `interval` and drops what
changed. Several API processes may share one database: each has its own cache and poller.

Freshness, by construction: the cache answers only while its last successful poll began less than `bound`
ago (else every read goes to the database, as without a cache), and that poll dropped every job whose
change committed before it began. So a change committed at time t is never hidden from a read after
t + bound, in any process. The same holds for API keys: the poll reads a signature of the keys table (a
key added or revoked changes it) and forgets every key's owner when it moves, so a revoked key stops
working within `bound`. This process's own job changes are dropped as they commit (`changes.on_commit`).

A read that misses reserves its slot before it reads the database; a change reported meanwhile removes the
reservation, so a body read before a change can never be stored after the change was reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric

from service.auth import hash_key
from service.store import changes
from service.store.changes import ChangeFeed, Poll
from service.store.jobs import JobStore

log = logging.getLogger(__name__)

# Seconds without a poll after which the cache starts again from nothing: far less than the time the
# feed's writers take to add `changes.KEEP_ROWS` rows, so no row this poller still needed was pruned.
_PRUNE_SAFE_GAP = 10.0


@dataclass(frozen=True)
class _Entry:
    owner: str
    body: bytes
    stored: float  # time.monotonic()


class _Reserved:
    """A slot taken by a read that is on its way to the database."""


@dataclass(frozen=True)
class Ticket:
    """What a read took before going to the database: its job slot and the keys' epoch."""

    job_id: str
    slot: _Reserved
    digest: str
    keys_epoch: int


class JobCache:
    """Job bodies and key owners in memory, evicted by the change feed; shared by the loop and threads.

    Args:
        store: the store whose feed is polled.
        interval: seconds between polls.
        bound: the freshness bound; the cache answers only while its last poll began less than this ago.
        max_jobs: how many job bodies to keep (least recently read dropped first).
        max_bytes: how many bytes of bodies to keep.
        max_age: seconds a body is kept at most, whatever the feed says: a process of an older release
            (during a rolling upgrade) changes jobs without writing feed rows.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        interval: float = 0.02,
        bound: float = 0.1,
        max_jobs: int = 4096,
        max_bytes: int = 32 << 20,
        max_age: float = 5.0,
    ) -> None:
        self.store = store
        self.interval, self.bound = interval, bound
        self.max_jobs, self.max_bytes, self.max_age = max_jobs, max_bytes, max_age
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _Entry | _Reserved] = OrderedDict()
        self._bytes = 0
        self._owners: dict[str, str] = {}  # key digest -> owner; only keys that were accepted
        self._keys_epoch = 0
        self._keys: tuple[int, int] | None = None
        self._fresh_since: float | None = None  # time.monotonic() at the start of the last good poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[list[str] | None], None]] = []
        changes.on_commit(store.engine, self.evict)

    def listen(self, listener: Callable[[list[str] | None], None]) -> None:
        """Call `listener` with the ids of every change this cache learns of, outside its lock; with None
        when it starts again from nothing (changes may have been missed). The live events wait on this."""
        self._listeners.append(listener)

    def _tell(self, job_ids: list[str] | None) -> None:
        for listener in self._listeners:
            try:
                listener(job_ids)
            except Exception:
                log.warning("job cache: a change listener failed", exc_info=True)

    # ---- reads (the event loop and the fast path's threads) ---------------------------------

    def fresh(self) -> bool:
        since = self._fresh_since
        return since is not None and time.monotonic() - since < self.bound

    def lookup(self, job_id: str, key: str) -> bytes | None:
        """The body for a caller presenting `key`, if both the key and the job are known; else None."""
        now = time.monotonic()
        since = self._fresh_since
        if since is not None and now - since < self.bound:
            digest = hash_key(key)
            with self._lock:
                owner = self._owners.get(digest)
                entry = self._jobs.get(job_id)
                if (
                    owner is not None
                    and isinstance(entry, _Entry)
                    and entry.owner == owner
                    and now - entry.stored < self.max_age
                ):
                    self._jobs.move_to_end(job_id)
                    self.hits += 1
                    return entry.body
        self.misses += 1
        return None

    def reserve(self, job_id: str, key: str) -> Ticket:
        """Take the job's slot before reading the database (see the module's docstring)."""
        slot = _Reserved()
        with self._lock:
            self._drop(job_id)
            self._jobs[job_id] = slot
            self._trim()
            return Ticket(job_id, slot, hash_key(key), self._keys_epoch)

    def fill(self, ticket: Ticket, *, owner: str | None, job_owner: str | None, body: bytes | None) -> None:
        """Keep what a read found: the key's owner (if accepted) and the job (if it exists)."""
        with self._lock:
            if owner is not None and ticket.keys_epoch == self._keys_epoch:
                if len(self._owners) >= self.max_jobs:
                    self._owners.clear()  # keys are few; a flood of valid keys only costs misses
                self._owners[ticket.digest] = owner
            if self._jobs.get(ticket.job_id) is not ticket.slot:
                return  # changed (or pushed out) while the read was on its way
            if job_owner is None or body is None or len(body) > self.max_bytes // 16:
                del self._jobs[ticket.job_id]
                return
            self._jobs[ticket.job_id] = _Entry(job_owner, body, time.monotonic())
            self._bytes += len(body)
            self._trim()

    # ---- invalidation (the poller, and this process's commits) ------------------------------

    def evict(self, job_ids: list[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._drop(job_id)
        self._tell(job_ids)

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._bytes = 0
            self._owners.clear()
            self._keys_epoch += 1

    def _drop(self, job_id: str) -> None:
        entry = self._jobs.pop(job_id, None)
        if isinstance(entry, _Entry):
            self._bytes -= len(entry.body)

    def _trim(self) -> None:
        while len(self._jobs) > self.max_jobs or self._bytes > self.max_bytes:
            _, entry = self._jobs.popitem(last=False)
            if isinstance(entry, _Entry):
                self._bytes -= len(entry.body)

    def apply(self, poll: Poll, started: float) -> None:
        """Apply a successful poll that began at `started` (time.monotonic())."""
        with self._lock:
            for job_id in poll.changed:
                self._drop(job_id)
            if poll.keys != self._keys:
                self._owners.clear()
                self._keys_epoch += 1
                self._keys = poll.keys
            self._fresh_since = started
        if poll.changed:
            self._tell(poll.changed)

    def families(self) -> list[Metric]:
        """The hit and miss counters, for /metrics (`Metrics.add_source`)."""
        hits = CounterMetricFamily(
            "parry_job_cache_hits", "GET /v1/jobs/{job_id} answered from the job cache.", value=self.hits
        )
        misses = CounterMetricFamily(
            "parry_job_cache_misses",
            "GET /v1/jobs/{job_id} the job cache could not answer.",
            value=self.misses,
        )
        return [hits, misses]

    # ---- the poller -------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="job-cache-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._fresh_since = None
        self.clear()

    def _run(self) -> None:
        feed: ChangeFeed | None = None
        polls = 0
        previous: float | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if feed is None:
                    feed = ChangeFeed(self.store.engine)
                poll = feed.poll()
                restarted = previous is None or started - previous >= _PRUNE_SAFE_GAP
                if restarted:
                    # The first poll starts from nothing: reads before it were not covered by the feed.
                    # A poller that stopped for long may have missed rows pruned meanwhile. A shorter
                    # delay (a slow database, a starved process) only makes the cache not fresh until
                    # this poll: the feed's position is kept, so what it reports now is every change.
                    self.clear()
                self.apply(poll, started)
                if restarted:
                    self._tell(None)  # waiters read again: what changed before this poll is unknown
                previous = started
                polls += 1
                if polls % 1500 == 0:  # every 30 s or so; each API process prunes, which is harmless
                    feed.prune()
            except Exception:
                self._fresh_since, previous = None, None
                log.warning("job cache: reading the change feed failed; reading the database", exc_info=True)
                if feed is not None:
                    try:
                        feed.close()
                    except Exception:
                        log.debug("job cache: closing the feed's connection failed", exc_info=True)
                    feed = None
                self._stop.wait(1.0)
                continue
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if feed is not None:
            feed.close()
