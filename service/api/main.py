"""The FastAPI application: `create_app()` wires the stores, the enqueuer, the routes and the error handlers.

This process never imports TensorFlow, Keras or `workers`: it writes job rows and sends task names.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.api import docs
from service.api.job_cache import JobCache
from service.api.job_events import JobWatch, close_on_exit_signals
from service.api.job_status import JobStatusFastPath
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.problems import EXCEPTION_HANDLERS, problem_openapi
from service.api.queue import BrokerProbe, CeleryEnqueuer, Enqueuer
from service.api.routes import ROUTERS
from service.api.routes import jobs as jobs_routes
from service.auth import KeyRing
from service.settings import Settings, get_settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Adversarial-robustness evaluation for TensorFlow models: upload a model and a dataset, "
    "submit attacks, poll the job, read the report. Errors are application/problem+json."
)


def create_app(settings: Settings | None = None, *, enqueuer: Enqueuer | None = None) -> FastAPI:
    """The API; `enqueuer` replaces the Celery client (tests record what would be sent)."""
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.resolved_database_url)
    artifacts = ArtifactStore(settings.data_dir)
    sender: Enqueuer = enqueuer if enqueuer is not None else CeleryEnqueuer(settings)
    probe = BrokerProbe(settings.redis_url)
    metrics = Metrics()
    keyring = KeyRing(settings, store)
    job_cache = JobCache(store)
    metrics.add_source(job_cache.families)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.create_schema)
        job_cache.start()  # needs the job_changes table; answers nothing until its first poll
        close_on_exit_signals(app.state.job_watch)
        resolver = await run_in_threadpool(keyring.resolver)
        if resolver is not None:  # the UI checks keys through this; None (absent) means open mode
            app.state.key_resolver = resolver
        # The app, FastAPI, SQLAlchemy and pydantic leave about 100k long-lived objects; a full collection
        # walks them all (about 50 ms here), which showed up as the p99 of every request it landed on.
        # Frozen, they are never walked again; what requests allocate is collected as usual.
        gc.collect()
        gc.freeze()
        log.info(
            "parry API ready (database %s, data %s)", store.engine.url.render_as_string(), settings.data_dir
        )
        try:
            yield
        finally:
            close = getattr(sender, "close", None)
            if close is not None:
                close()
            probe.close()
            job_cache.stop()
            store.dispose()
            gc.unfreeze()  # an app that stops inside a longer-lived process (tests) can then be collected

    app = FastAPI(
        title="Parry",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        docs_url=None,  # service/api/docs.py serves both pages with local assets
        redoc_url=None,
    )
    app.openapi = problem_openapi(app)  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.store = store
    app.state.artifacts = artifacts
    app.state.enqueuer = sender
    app.state.broker = probe
    app.state.metrics = metrics
    app.state.keyring = keyring
    app.state.job_cache = job_cache
    app.state.job_watch = JobWatch(job_cache)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(docs.router)
    job_route = next(r for r in jobs_routes.router.routes if getattr(r, "path", None) == "/v1/jobs/{job_id}")
    app.add_middleware(JobStatusFastPath, store=store, keyring=keyring, route=job_route, cache=job_cache)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so it times both
    return app
