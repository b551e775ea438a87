"""`GET /v1/jobs/{id}` without FastAPI's routing and dependency solving: the request clients poll.

CI clients and the UI poll job status every second or so, and a request through the full FastAPI
stack costs about ten times the two indexed reads it needs (the caller's key, the job row). This
ASGI middleware answers that one request when it can (the caller is allowed and the job is theirs)
with the same body the route would give, built by the same `JobOut.of`. Everything else, a 401 or a
404 included, goes on to the app, so errors keep a single source: the route and its handlers.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

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

    def __init__(self, app: ASGIApp, *, store: JobStore, keyring: KeyRing, route: Any) -> None:
        self.app = app
        self.store = store
        self.keyring = keyring
        self.route = route
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
        if self.inline:
            body = self.read(match[1], key)
        else:
            body = await to_thread.run_sync(self.read, match[1], key)
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def read(self, job_id: str, key: str) -> bytes | None:
        """The job's JSON for the caller presenting `key`; None when the app must answer instead."""
        try:
            with self.store.reading():
                owner = self.keyring.owner_for(key)
                job = None if owner is None else self.store.find_job(job_id, owner=owner)
            return None if job is None else JobOut.of(job).model_dump_json().encode()
        except Exception:  # the route meets the same failure and answers it as a problem
            log.debug("fast read of job %s failed; the route answers", job_id, exc_info=True)
            return None
