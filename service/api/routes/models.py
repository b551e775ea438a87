"""`/v1/models`: upload (content-addressed, sniffed and vetted before it is stored), list, get, delete."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, EnqueuerDep, JobStoreDep, OwnerDep, SettingsDep, Sha256Filter
from service.api.queue import Enqueuer, send_logged
from service.api.schemas import ModelList, ModelOut
from service.api.uploads import Upload, multipart_openapi, receive_upload
from service.domain import tasks as broker
from service.errors import InvalidUpload
from service.settings import Settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from service.store.records import ModelRecord
from service.vetting import archives, keras_config

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"])

OUTPUTS = ("auto", "logits", "probabilities")
_FIELDS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "description": "A label for the model; default: the file name."},
    "output": {"type": "string", "enum": list(OUTPUTS), "default": "auto"},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    openapi_extra=multipart_openapi(_FIELDS),
    responses={200: {"model": ModelOut, "description": "The same bytes were uploaded before."}},
)
async def upload_model(
    request: Request,
    response: Response,
    store: JobStoreDep,
    artifacts: ArtifactsDep,
    enqueuer: EnqueuerDep,
    settings: SettingsDep,
    owner: OwnerDep,
) -> ModelOut:
    """Upload a SavedModel archive (zip or tar), a .keras or an .h5 file; it is validated by a worker."""
    upload = await receive_upload(request, artifacts, max_bytes=settings.max_upload_bytes)
    record, created = await register_model(
        upload, store=store, artifacts=artifacts, enqueuer=enqueuer, settings=settings, owner=owner
    )
    response.headers["Location"] = f"/v1/models/{record.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return ModelOut.of(record)


async def register_model(
    upload: Upload,
    *,
    store: JobStore,
    artifacts: ArtifactStore,
    enqueuer: Enqueuer,
    settings: Settings,
    owner: str,
) -> tuple[ModelRecord, bool]:
    """Vet a received upload, store its bytes, add the model and send it to validation (when it is new).
    The API's route and the UI's upload form both come here; the upload's temp file is gone after."""
    try:
        output = _output(upload)
        model_format = await run_in_threadpool(_vet, upload, settings)
        blob = artifacts.put_file(upload.file.path, sha256=upload.file.sha256)
    except BaseException:
        upload.discard()
        raise
    name = upload.fields.get("name") or _stem(upload.filename) or "model"
    record, created = await run_in_threadpool(
        lambda: store.add_model(
            owner=owner,
            name=name[:500],
            sha256=blob.sha256,
            format=model_format,
            size_bytes=blob.size_bytes,
            output=output,
        )
    )
    if created:
        await run_in_threadpool(send_logged, enqueuer, broker.VALIDATE_MODEL, [record.id])
    return record, created


def _output(upload: Upload) -> Literal["auto", "logits", "probabilities"]:
    output = upload.fields.get("output") or "auto"
    if output not in OUTPUTS:
        raise InvalidUpload(
            f"output must be one of {', '.join(OUTPUTS)}, not {output!r}",
            errors=[{"loc": ["body", "output"], "msg": f"must be one of {', '.join(OUTPUTS)}"}],
        )
    return output  # type: ignore[return-value]


def _vet(upload: Upload, settings: Settings) -> str:
    """Sniff the format from the bytes and check archives for traversal, links and bombs."""
    path = upload.file.path
    try:
        model_format = archives.detect_model_format(path)
        if model_format in ("saved_model", "keras"):
            archives.check_archive(
                path,
                max_entries=settings.max_archive_entries,
                max_expanded_bytes=settings.max_archive_expanded_bytes,
                max_ratio=settings.max_archive_ratio,
            )
        if model_format == "keras":  # a fast 422 for what the worker would refuse anyway
            keras_config.check_keras_file(path)
    except (archives.ArchiveError, keras_config.UnsafeKerasConfig) as exc:
        log.info("model upload refused (sha256 %s, %s): %s", upload.file.sha256, upload.filename, exc)
        raise InvalidUpload(str(exc)) from exc
    return model_format


def _stem(filename: str | None) -> str | None:
    if not filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".keras", ".h5", ".hdf5"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or base
    return base


@router.get("", response_model=ModelList)
def list_models(store: JobStoreDep, owner: OwnerDep, sha256: Sha256Filter = None) -> ModelList:
    """The caller's models, newest first; `sha256` finds the one with those bytes (skip a re-upload)."""
    if sha256 is not None:
        found = store.model_by_sha(owner, sha256.lower())
        return ModelList(items=[] if found is None else [ModelOut.of(found)])
    return ModelList(items=[ModelOut.of(m) for m in store.list_models(owner)])


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, store: JobStoreDep, owner: OwnerDep) -> ModelOut:
    """One model, with its validation status."""
    return ModelOut.of(store.get_model(model_id, owner=owner))


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(model_id: str, store: JobStoreDep, owner: OwnerDep) -> Response:
    """Forget a model; jobs that already ran keep their results."""
    store.delete_model(model_id, owner=owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
