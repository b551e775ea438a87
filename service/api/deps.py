"""FastAPI dependencies: the app's settings, stores, enqueuer and the caller's identity.

Everything is built once by `create_app()` and kept on `app.state`; tests replace pieces with
`app.dependency_overrides` (for instance a recording enqueuer instead of Celery). The getters are
`async def` because they only read `app.state`: a plain `def` dependency costs a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.job_events import JobWatch
from service.api.metrics import Metrics
from service.api.queue import BrokerProbe, Enqueuer
from service.auth import LOCAL_OWNER, KeyRing
from service.settings import Settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


async def get_artifacts(request: Request) -> ArtifactStore:
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


async def get_enqueuer(request: Request) -> Enqueuer:
    enqueuer: Enqueuer = request.app.state.enqueuer
    return enqueuer


async def get_broker(request: Request) -> BrokerProbe:
    probe: BrokerProbe = request.app.state.broker
    return probe


async def get_job_watch(request: Request) -> JobWatch:
    watch: JobWatch = request.app.state.job_watch
    return watch


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


# Declares the scheme in the OpenAPI document; the key itself is checked below (401 with a sentence).
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key (`parry keys create` or PARRY_API_KEYS); not needed while the server has none.",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


# `request` defaults to None only so that code outside a request (the UI's open-mode check) may call
# `get_owner()`; FastAPI always passes the request.
def get_owner(request: Request = None, credentials: BearerCredentials = None) -> str:  # type: ignore[assignment]
    """The caller's owner: the id of the API key in `Authorization: Bearer`, or `local` while no key exists.

    A missing, unknown or revoked key is a 401 problem with `WWW-Authenticate: Bearer`.
    """
    if request is None:
        return LOCAL_OWNER
    keyring: KeyRing = request.app.state.keyring
    key = credentials.credentials.strip() if credentials is not None else ""
    owner = keyring.owner_for(key)
    if owner is None:
        if not key:
            raise _unauthorized("this API needs a key: send Authorization: Bearer <key>")
        raise _unauthorized("the API key is not valid (unknown or revoked)")
    # The UI's pages read `app.state.key_resolver`; keep it in step once a key appears after start-up.
    if owner != LOCAL_OWNER and getattr(request.app.state, "key_resolver", None) is None:
        request.app.state.key_resolver = keyring.owner_of
    return owner


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
JobStoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
BrokerDep = Annotated[BrokerProbe, Depends(get_broker)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobWatchDep = Annotated[JobWatch, Depends(get_job_watch)]
OwnerDep = Annotated[str, Depends(get_owner)]
# `?sha256=` on the model and dataset lists: find what the server has for some bytes without uploading them.
Sha256Filter = Annotated[
    str | None, Query(pattern="^[0-9a-fA-F]{64}$", description="Only the item with these bytes (hex sha256).")
]
