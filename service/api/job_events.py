"""Live job events: `GET /v1/jobs/{id}/events` (Server-Sent Events) and the long poll `?wait=` of a job.

Both wait on `JobWatch`, which the job cache wakes (service/api/job_cache.py): its poller hands over the ids
the change feed reports (every process's commits), and this process's own commits are handed over as they
commit. No thread is held while a client waits: a waiter is an `asyncio.Event`, and only the short read of
the job row after a wake-up takes a thread (SQLite is read inline, as the fast path does). While the feed is
not fresh (the poller is failing or has not polled yet) a waiter reads the database every
`FALLBACK_INTERVAL` seconds instead. Redis is not involved: it stays only the broker.

A wake-up that lands between a read and the next wait is never lost: a waiter's event is cleared *before*
each read, so a change committed after the read sets it again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from anyio import to_thread

from service.api.job_cache import JobCache
from service.api.schemas import JobOut
from service.domain.jobs import TERMINAL_STATUSES
from service.store.jobs import JobStore
from service.store.records import JobRecord

# Seconds between reads of the database while the change feed cannot be trusted to wake waiters.
FALLBACK_INTERVAL = 1.0
# Seconds between SSE comments that keep proxies and clients from dropping an idle stream.
KEEPALIVE_INTERVAL = 15.0
# The longest `?wait=` a request may ask for, in seconds.
MAX_WAIT = 60.0
# What an SSE client waits before reconnecting after the stream dropped (the `retry:` field), in ms.
RETRY_MS = 2000


class _Waiter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()


class JobWatch:
    """Async waiters per job id, woken from any thread by `notify` (the cache's poller, commit listeners)."""

    def __init__(self, cache: JobCache | None) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._waiters: dict[str, set[_Waiter]] = {}
        # Per watched job: how many wake-ups it has had, and the read made since the latest one. The
        # listeners of a job share that read, so a change costs one database read, not one per listener.
        self._generations: dict[str, int] = {}
        self._reads: dict[str, tuple[int, asyncio.Future[JobRecord | None]]] = {}
        self.closed = False
        if cache is not None:
            cache.listen(self.notify)

    def fresh(self) -> bool:
        """Whether the feed wakes waiters within its bound; otherwise waiters poll the database."""
        return self.cache is not None and self.cache.fresh()

    def notify(self, job_ids: list[str] | None) -> None:
        """Wake the waiters of `job_ids`; None wakes every waiter (the feed may have missed changes)."""
        with self._lock:
            watched = list(self._waiters) if job_ids is None else [j for j in job_ids if j in self._waiters]
            for job_id in watched:
                self._generations[job_id] = self._generations.get(job_id, 0) + 1
            woken = [w for job_id in watched for w in self._waiters[job_id]]
        for waiter in woken:
            try:
                waiter.loop.call_soon_threadsafe(waiter.event.set)
            except RuntimeError:  # that loop has closed: its waiter is gone with it
                pass

    def close(self) -> None:
        """End every stream and long poll (with the job as it is): the server is stopping."""
        self.closed = True
        self.notify(None)

    def subscribe(self, job_id: str) -> _Waiter:
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
        return waiter

    def unsubscribe(self, job_id: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[job_id]
                    self._generations.pop(job_id, None)
                    self._reads.pop(job_id, None)

    async def read(self, job_id: str, read: Callable[[], JobRecord | None]) -> JobRecord | None:
        """The job as read since its latest wake-up: the read another listener started, or a new one."""
        with self._lock:
            generation = self._generations.get(job_id, 0)
        shared = self._reads.get(job_id)  # only the event loop's thread touches `_reads`
        # A finished read stays good until the next wake-up only while the feed wakes: without it,
        # changes come unannounced and every re-read goes to the database.
        if shared is None or shared[0] != generation or (shared[1].done() and not self.fresh()):
            shared = (generation, asyncio.ensure_future(_read(self.cache, read)))
            self._reads[job_id] = shared
        # Shielded: a listener that goes away does not cancel the read the others wait for.
        return await asyncio.shield(shared[1])

    def listeners(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    async def follow(
        self, job_id: str, read: Callable[[], JobRecord | None], *, timeout: float | None
    ) -> AsyncIterator[JobRecord]:
        """The job as read now, then again each time it may have changed (and at least every
        `KEEPALIVE_INTERVAL`), until `timeout` seconds have passed (None: no end) or the job is gone.

        The same state may come twice; the caller compares, and stops iterating when it has what it waits for.
        """
        waiter = self.subscribe(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                waiter.event.clear()
                job = await self.read(job_id, read)
                if job is None:
                    return
                yield job
                if self.closed:
                    return
                pause = KEEPALIVE_INTERVAL if self.fresh() else FALLBACK_INTERVAL
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    pause = min(pause, left)
                try:
                    await asyncio.wait_for(waiter.event.wait(), pause)
                except TimeoutError:
                    pass
                if self.closed:
                    return
        finally:
            self.unsubscribe(job_id, waiter)


def close_on_exit_signals(watch: JobWatch) -> None:
    """Close the streams when the server is told to stop (SIGINT, SIGTERM).

    uvicorn waits for every open response to end before it stops, and a job's stream only ends with the
    job: without this, a UI tab left open would keep a stopping server up. Signal handlers live in the
    main thread only; a server run in another thread (tests) is stopped by its owner instead.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            loop.call_soon_threadsafe(watch.close)
            previous(signum, frame)

        signal.signal(sig, handler)


async def _read(cache: JobCache | None, read: Callable[[], JobRecord | None]) -> JobRecord | None:
    inline = cache is not None and cache.store.engine.dialect.name == "sqlite"
    return read() if inline else await to_thread.run_sync(read)


async def long_poll(watch: JobWatch, store: JobStore, job: JobRecord, *, wait: float) -> JobRecord:
    """The job as soon as its status differs from `job`'s, or as it is after `wait` seconds."""
    latest = job
    if job.status in TERMINAL_STATUSES:
        return latest
    async for seen in watch.follow(job.id, lambda: store.find_job(job.id, owner=job.owner), timeout=wait):
        latest = seen
        if seen.status != job.status:
            break
    return latest


def event(name: str, data: dict[str, Any], *, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; `data` is JSON on a single line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _status_data(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "cancel_requested": job.cancel_requested,
    }


async def event_stream(watch: JobWatch, store: JobStore, job: JobRecord) -> AsyncIterator[bytes]:
    """The SSE body of a job: `status` on every status change (first the current one), `progress` on every
    progress report, then `end` with the final status, the error and the result's links; then it closes."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    sent: tuple[str, Any, bool] | None = None
    count = 0
    quiet_since = time.monotonic()
    async for seen in watch.follow(job.id, lambda: store.find_job(job.id, owner=job.owner), timeout=None):
        state = (seen.status, seen.progress, seen.cancel_requested)
        if state != sent:
            count += 1
            name = "status" if sent is None or sent[0] != seen.status else "progress"
            yield event(name, _status_data(seen), event_id=count)
            sent, quiet_since = state, time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_INTERVAL:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        if seen.status in TERMINAL_STATUSES:
            links = JobOut.of(seen).links.model_dump()
            end = {"id": seen.id, "status": seen.status, "error": seen.error, "links": links}
            yield event("end", end, event_id=count + 1)
            return
    if watch.closed:
        return  # the server is stopping: the client reconnects (or polls) once it is back
    # The job is gone (deleted with its owner's data): say so rather than leave the client waiting.
    yield event("end", {"id": job.id, "status": None, "error": None, "links": None}, event_id=count + 1)


SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
