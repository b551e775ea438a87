"""`/v1/datasets`: `.npz` uploads (checked before they are stored) and the built-in datasets."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, JobStoreDep, OwnerDep, SettingsDep, Sha256Filter
from service.api.schemas import DatasetList, DatasetOut
from service.api.uploads import Upload, multipart_openapi, receive_upload
from service.domain import builtins as builtin_info
from service.domain import datasets
from service.errors import InvalidUpload, NotFound, Unprocessable
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from service.store.records import DatasetRecord

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def builtin_dataset(dataset_id: str) -> DatasetOut:
    """Metadata of a built-in dataset (computed once per process, see service.domain.builtins)."""
    try:
        info = builtin_info.catalog.get(dataset_id)
    except datasets.DatasetError as exc:
        raise NotFound(f"dataset {dataset_id!r} does not exist: {exc}") from exc
    return DatasetOut(**info, name=dataset_id, builtin=True, created_at=None)


def resolve_dataset(store: JobStore, dataset_id: str, *, owner: str) -> DatasetOut:
    """A built-in or an uploaded dataset by id; NotFound names the id."""
    if datasets.is_builtin(dataset_id):
        return builtin_dataset(dataset_id)
    return DatasetOut.of(store.get_dataset(dataset_id, owner=owner))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    openapi_extra=multipart_openapi({"name": {"type": "string"}}),
    responses={200: {"model": DatasetOut, "description": "The same bytes were uploaded before."}},
)
async def upload_dataset(
    request: Request,
    response: Response,
    store: JobStoreDep,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    owner: OwnerDep,
) -> DatasetOut:
    """Upload an .npz with arrays `x` (N, ...) and `y` (N,) labels or (N, C) one-hot."""
    upload = await receive_upload(request, artifacts, max_bytes=settings.max_upload_bytes)
    record, created = await register_dataset(upload, store=store, artifacts=artifacts, owner=owner)
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return DatasetOut.of(record)


async def register_dataset(
    upload: Upload, *, store: JobStore, artifacts: ArtifactStore, owner: str
) -> tuple[DatasetRecord, bool]:
    """Check a received `.npz` (bounded memory), store its bytes and add the dataset with its value range.
    The API's route and the UI's upload form both come here; the upload's temp file is gone after."""
    try:
        try:
            data = await run_in_threadpool(datasets.summarize_npz, upload.file.path)
        except datasets.DatasetError as exc:
            log.info("dataset upload refused (sha256 %s, %s): %s", upload.file.sha256, upload.filename, exc)
            raise InvalidUpload(
                str(exc).replace(upload.file.path.name, upload.filename or "the upload")
            ) from exc
        blob = artifacts.put_file(upload.file.path, sha256=upload.file.sha256)
    except BaseException:
        upload.discard()
        raise
    name = upload.fields.get("name") or _stem(upload.filename) or "dataset"
    return await run_in_threadpool(
        lambda: store.add_dataset(
            owner=owner,
            name=name[:500],
            sha256=blob.sha256,
            size_bytes=blob.size_bytes,
            num_samples=data.num_samples,
            sample_shape=list(data.sample_shape),
            num_classes=data.num_classes,
            min_value=data.min_value,
            max_value=data.max_value,
        )
    )


def _stem(filename: str | None) -> str | None:
    if not filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".npz") and len(base) > 4 else base


@router.get("", response_model=DatasetList)
def list_datasets(store: JobStoreDep, owner: OwnerDep, sha256: Sha256Filter = None) -> DatasetList:
    """The built-ins, then the caller's uploads (newest first); `sha256` finds the upload with those bytes."""
    if sha256 is not None:
        found = store.dataset_by_sha(owner, sha256.lower())
        return DatasetList(items=[] if found is None else [DatasetOut.of(found)])
    builtins = [builtin_dataset(dataset_id) for dataset_id in builtin_info.BUILTIN_IDS]
    return DatasetList(items=builtins + [DatasetOut.of(d) for d in store.list_datasets(owner)])


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, store: JobStoreDep, owner: OwnerDep) -> DatasetOut:
    """One dataset: `dst_...` or a built-in id such as `builtin:mnist-5k:test`."""
    return resolve_dataset(store, dataset_id, owner=owner)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: str, store: JobStoreDep, owner: OwnerDep) -> Response:
    """Forget an uploaded dataset (built-ins cannot be deleted)."""
    if datasets.is_builtin(dataset_id):
        raise Unprocessable(f"{dataset_id} is a built-in dataset and cannot be deleted")
    store.delete_dataset(dataset_id, owner=owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
