"""`GET /v1/jobs/{id}` without FastAPI's routing and dependency solving: the request clients poll.

CI clients and the UI poll job status every second or so, and a request through the full FastAPI
stack costs about ten times the two indexed reads it needs (the caller's key, the job row). This
ASGI middleware answers that one request when it can (the caller is allowed and the job is theirs)
with the same body the route would give, built by the same `JobOut.of`. Everything else, a 401 or a
404 included, goes on to the app, so errors keep a single source: the route and its handlers.

With a `JobCache` (service/api/job_cache.py) a read the cache can answer never leaves the event loop;
the cache holds the bodies this layer built, so both answers are the same bytes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.job_cache import JobCache
from service.api.schemas import JobOut
from service.auth import KeyRing, bearer_token
from service.store.jobs import JobStore

log = logging.getLogger(__name__)

_JOB_PATH = re.compile(r"/v1/jobs/([^/]+)")


class JobStatusFastPath:
    """Serves a permitted `GET /v1/jobs/{job_id}`; passes every other request to `app` unchanged.

    `route` is the app's own route for that path: it is put in the scope so that the metrics label
    the request as the route would have been labelled.
    """

    def __init__(
        self, app: ASGIApp, *, store: JobStore, keyring: KeyRing, route: Any, cache: JobCache | None = None
    ) -> None:
        self.app = app
        self.store = store
        self.keyring = keyring
        self.route = route
        self.cache = cache
        # SQLite answers a point read in tens of microseconds, less than a thread hop costs; a database
        # across a network is read from a worker thread so that a slow answer never stalls the loop.
        self.inline = store.engine.dialect.name == "sqlite"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _JOB_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        # A query string asks for more than the plain read (a later `?wait=`): the route answers it.
        if match is None or scope["method"] != "GET" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        key = bearer_token(authorization.decode("latin-1"))
        body = self.cached(match[1], key)
        if body is None:
            body = (
                self.read(match[1], key)
                if self.inline
                else await to_thread.run_sync(self.read, match[1], key)
            )
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def cached(self, job_id: str, key: str) -> bytes | None:
        """The job's JSON from the cache, without touching the database; None when it does not know."""
        return None if self.cache is None else self.cache.lookup(job_id, key)

    def read(self, job_id: str, key: str) -> bytes | None:
        """The job's JSON for the caller presenting `key`, read from the database (and kept in the cache);
        None when the app must answer instead. The key is checked against the store, as the route does."""
        ticket = None if self.cache is None else self.cache.reserve(job_id, key)
        owner = job = body = None
        try:
            with self.store.reading():
                owner = self.keyring.owner_for(key)
                # Read by id alone, so the cache keeps the job for whichever key owns it; the owner is
                # compared here as the route's `owner =` filter would.
                job = None if owner is None else self.store.find_job(job_id)
            body = None if job is None else JobOut.of(job).model_dump_json().encode()
        except Exception:  # the route meets the same failure and answers it as a problem
            log.debug("fast read of job %s failed; the route answers", job_id, exc_info=True)
            owner = job = body = None
        if ticket is not None and self.cache is not None:
            self.cache.fill(ticket, owner=owner, job_owner=None if job is None else job.owner, body=body)
        return body if job is not None and job.owner == owner else None
