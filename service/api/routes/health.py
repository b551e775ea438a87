"""Health, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, BrokerDep, JobStoreDep, MetricsDep
from service.api.schemas import Health, Problem
from service.errors import NotReady

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """200 while the process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Problem}})
async def readyz(store: JobStoreDep, broker: BrokerDep, artifacts: ArtifactsDep) -> Health:
    """200 when the database, the broker and the artifact store answer; 503 naming the ones that do not."""
    checks = {"database": store.ping, "broker": broker.ping, "artifact store": artifacts.ping}
    failed: list[dict[str, object]] = []
    for name, ping in checks.items():
        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # every failure of a dependency means "not ready", whatever its type
            log.warning("readiness: the %s does not answer: %s: %s", name, type(exc).__name__, exc)
            failed.append({"loc": [name], "msg": f"{type(exc).__name__}: {exc}"[:300]})
    if failed:
        names = " and ".join(str(f["loc"][0]) for f in failed)  # type: ignore[index]
        raise NotReady(
            f"not ready: the {names} {'does' if len(failed) == 1 else 'do'} not answer", errors=failed
        )
    return Health(status="ready", checks=dict.fromkeys(checks, "ok"))


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(metrics: MetricsDep, store: JobStoreDep, broker: BrokerDep) -> Response:
    """Prometheus text: request counts and latency, jobs by status, queue depth."""
    try:
        jobs = await run_in_threadpool(store.count_jobs_by_status)
    except Exception as exc:  # a scrape must answer even when the database is down
        log.warning("metrics: job counts unavailable: %s", exc)
        jobs = None
    try:
        depth: int | None = await run_in_threadpool(broker.queue_depth)
    except Exception:  # the broker may be down; parry_broker_up says so
        depth = None
    body = metrics.render(jobs_by_status=jobs, queue_depth=depth)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
