"""Uploaded models and datasets: their rows, validation states and lookups by content hash."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service.errors import NotFound
from service.store.database import Database
from service.store.records import DatasetRecord, ModelRecord, new_id, record_from_row
from service.store.schema import datasets_table, models_table

log = logging.getLogger(__name__)


class CatalogStore(Database):
    """Models and datasets, per owner."""

    # ---- models ------------------------------------------------------------------------------

    def add_model(
        self,
        *,
        owner: str,
        name: str,
        sha256: str,
        format: str,
        size_bytes: int,
        output: str,
        warnings: list[str] | None = None,
    ) -> tuple[ModelRecord, bool]:
        """A new model in status `validating`; the same owner and bytes give the existing record."""
        existing = self._model_by_sha(owner, sha256)
        if existing is not None:
            return existing, False
        now = self.now()
        row: dict[str, Any] = {
            "id": new_id("mdl"),
            "owner": owner,
            "name": name,
            "sha256": sha256,
            "format": format,
            "size_bytes": size_bytes,
            "status": "validating",
            "input_shape": None,
            "num_classes": None,
            "output": output,
            "rejection": None,
            "created_at": now,
            "updated_at": now,
            "warnings": warnings or None,
        }
        try:
            with self._tx() as conn:
                conn.execute(models_table.insert().values(**row))
        except IntegrityError:
            # Two identical uploads raced; the unique (owner, sha256) constraint picked the first.
            existing = self._model_by_sha(owner, sha256)
            if existing is None:
                raise
            return existing, False
        log.info("model %s added (sha256 %s, format %s, owner %s)", row["id"], sha256, format, owner)
        return self.get_model(row["id"]), True

    def _model_by_sha(self, owner: str, sha256: str) -> ModelRecord | None:
        query = sa.select(models_table).where(models_table.c.owner == owner, models_table.c.sha256 == sha256)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else record_from_row(ModelRecord, row)

    def stale_validating_models(self, *, older_than_seconds: float) -> list[ModelRecord]:
        """Models still `validating` after a while: their validation message may be lost, send it again."""
        cutoff = self.now() - timedelta(seconds=older_than_seconds)
        t = models_table.c
        query = sa.select(models_table).where(t.status == "validating", t.updated_at < cutoff).order_by(t.seq)
        with self.engine.connect() as conn:
            return [record_from_row(ModelRecord, row) for row in conn.execute(query).mappings()]

    def get_model(self, model_id: str, *, owner: str | None = None) -> ModelRecord:
        """The model; `NotFound` when it does not exist or belongs to another owner."""
        row = self._get(models_table, model_id, owner)
        if row is None:
            raise NotFound(f"model {model_id!r} does not exist")
        return record_from_row(ModelRecord, row)

    def list_models(self, owner: str) -> list[ModelRecord]:
        return [record_from_row(ModelRecord, row) for row in self._list(models_table, owner)]

    def delete_model(self, model_id: str, *, owner: str) -> None:
        self._delete(models_table, model_id, owner, "model")

    def set_model_ready(
        self,
        model_id: str,
        *,
        input_shape: list[int],
        num_classes: int,
        output: str,
        trainable: bool | None = None,
    ) -> None:
        self._update_model(
            model_id,
            status="ready",
            input_shape=[int(d) for d in input_shape],
            num_classes=int(num_classes),
            output=output,
            rejection=None,
            trainable=trainable,
        )
        log.info("model %s ready: input %s, %d classes, %s", model_id, input_shape, num_classes, output)

    def start_model_validation(self, model_id: str) -> int | None:
        """Count a worker starting to validate the model; the count so far, None when it is not validating."""
        t = models_table.c
        update = (
            models_table.update()
            .where(t.id == model_id, t.status == "validating")
            .values(validation_attempts=t.validation_attempts + 1, updated_at=self.now())
        )
        with self._tx() as conn:
            if conn.execute(update).rowcount != 1:
                return None
            count = conn.execute(sa.select(t.validation_attempts).where(t.id == model_id)).scalar_one()
        return int(count)

    def touch_model_validation(self, model_id: str) -> bool:
        """A validation still running: keeps the model off the reconciler's stale list; False when it is
        no longer validating (deleted, or settled elsewhere)."""
        t = models_table.c
        update = (
            models_table.update()
            .where(t.id == model_id, t.status == "validating")
            .values(updated_at=self.now())
        )
        with self._tx() as conn:
            return bool(conn.execute(update).rowcount == 1)

    def set_model_rejected(self, model_id: str, *, reason: str) -> None:
        self._update_model(model_id, status="rejected", rejection=reason)
        log.info("model %s rejected: %s", model_id, reason)

    def _update_model(self, model_id: str, **values: Any) -> None:
        query = (
            models_table.update().where(models_table.c.id == model_id).values(updated_at=self.now(), **values)
        )
        with self._tx() as conn:
            if conn.execute(query).rowcount != 1:
                raise NotFound(f"model {model_id!r} does not exist")

    # ---- datasets ----------------------------------------------------------------------------

    def add_dataset(
        self,
        *,
        owner: str,
        name: str,
        sha256: str,
        size_bytes: int,
        num_samples: int,
        sample_shape: list[int],
        num_classes: int,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> tuple[DatasetRecord, bool]:
        """A new dataset; the same owner and bytes give the existing record."""
        existing = self._dataset_by_sha(owner, sha256)
        if existing is not None:
            return existing, False
        row: dict[str, Any] = {
            "id": new_id("dst"),
            "owner": owner,
            "name": name,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "num_samples": num_samples,
            "sample_shape": [int(d) for d in sample_shape],
            "num_classes": num_classes,
            "created_at": self.now(),
            "min_value": min_value,
            "max_value": max_value,
        }
        try:
            with self._tx() as conn:
                conn.execute(datasets_table.insert().values(**row))
        except IntegrityError:
            existing = self._dataset_by_sha(owner, sha256)
            if existing is None:
                raise
            return existing, False
        log.info("dataset %s added (sha256 %s, %d samples, owner %s)", row["id"], sha256, num_samples, owner)
        return self.get_dataset(row["id"]), True

    def _dataset_by_sha(self, owner: str, sha256: str) -> DatasetRecord | None:
        query = sa.select(datasets_table).where(
            datasets_table.c.owner == owner, datasets_table.c.sha256 == sha256
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else record_from_row(DatasetRecord, row)

    def get_dataset(self, dataset_id: str, *, owner: str | None = None) -> DatasetRecord:
        row = self._get(datasets_table, dataset_id, owner)
        if row is None:
            raise NotFound(f"dataset {dataset_id!r} does not exist")
        return record_from_row(DatasetRecord, row)

    def list_datasets(self, owner: str) -> list[DatasetRecord]:
        return [record_from_row(DatasetRecord, row) for row in self._list(datasets_table, owner)]

    def delete_dataset(self, dataset_id: str, *, owner: str) -> None:
        self._delete(datasets_table, dataset_id, owner, "dataset")

    def model_by_sha(self, owner: str, sha256: str) -> ModelRecord | None:
        """The owner's model with these bytes, or None."""
        return self._model_by_sha(owner, sha256)

    def dataset_by_sha(self, owner: str, sha256: str) -> DatasetRecord | None:
        """The owner's dataset with these bytes, or None."""
        return self._dataset_by_sha(owner, sha256)
