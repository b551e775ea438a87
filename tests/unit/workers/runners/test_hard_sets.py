"""The hard-set job called as a plain function: real store, real children, two tiny trained Keras models.

The expected kept set is computed here, apart from the product: Keras itself runs each surrogate on the
pool, and a sample is expected kept when every surrogate's top class is wrong and its top probability is
at least the threshold.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset, load_builtin, load_npz
from tests.modelzoo import digits_softmax_file
from tests.workerkit import ready_model
from workers.context import WorkerContext
from workers.runners import hard_set as hard_sets


@pytest.fixture(scope="module")
def digits_softmax(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second digits surrogate, one that outputs probabilities."""
    return digits_softmax_file(tmp_path_factory.mktemp("softmax") / "digits-softmax.keras")


def _probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """Class probabilities by Keras alone: the output, under a softmax when the model has no softmax head."""
    import keras

    model = keras.saving.load_model(path)
    out = np.asarray(model.predict(x, batch_size=512, verbose=0), dtype=np.float64)
    if model.layers[-1].activation is keras.activations.softmax:
        return out
    z = out - out.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _job(ctx: WorkerContext, **spec: Any) -> str:
    job, _ = ctx.store.create_job(owner="o", kind="hard_set", spec=spec)
    return job.id


def _misses(probabilities: list[np.ndarray], y: np.ndarray, threshold: float) -> list[np.ndarray]:
    return [(p.argmax(axis=1) != y) & (p.max(axis=1) >= threshold) for p in probabilities]


def _threshold_away_from_every_confidence(probabilities: list[np.ndarray], y: np.ndarray) -> float:
    """A threshold that keeps some samples and that no confidence lies within float noise of."""
    confidences = np.concatenate([p.max(axis=1) for p in probabilities])
    for threshold in np.round(np.arange(0.9, 0.1, -0.01), 2):
        kept = np.logical_and.reduce(_misses(probabilities, y, float(threshold)))
        if kept.sum() >= 3 and np.abs(confidences - threshold).min() > 1e-5:
            return float(threshold)
    raise AssertionError("no usable threshold: the surrogates agree on too few mistakes")


def test_the_kept_set_is_exactly_the_samples_every_surrogate_gets_wrong_confidently(
    ctx: WorkerContext, digits_keras: Path, digits_softmax: Path
) -> None:
    pool = load_builtin("builtin:digits")
    paths = [digits_keras, digits_softmax]
    probabilities = [_probabilities(p, pool.x) for p in paths]
    threshold = _threshold_away_from_every_confidence(probabilities, pool.y)
    misses = _misses(probabilities, pool.y, threshold)
    expected = np.logical_and.reduce(misses)
    models = [ready_model(ctx, p) for p in paths]
    assert ctx.store.get_model(models[1]).output == "probabilities"

    # The last model validated has the warm child, so it goes first here, and the other first next time.
    order = [1, 0]
    job_id = _job(
        ctx,
        pool_dataset_id="builtin:digits",
        surrogate_model_ids=[models[i] for i in order],
        min_confidence=threshold,
        batch_size=100,
    )
    assert hard_sets.run_hard_set(ctx, job_id) == "succeeded"
    job = ctx.store.get_job(job_id)
    result = job.result
    assert result is not None and result["kept"] == int(expected.sum()) and result["pool_size"] == 1797
    for outcome, model_id, p, miss in zip(
        result["per_surrogate"],
        *([x[i] for i in order] for x in (models, probabilities, misses)),
        strict=True,
    ):
        assert outcome["model_id"] == model_id
        assert outcome["misclassified_confident"] == int(miss.sum())
        assert outcome["accuracy"] == pytest.approx(float(np.mean(p.argmax(axis=1) == pool.y)), abs=1e-9)
    assert result["per_class_kept"] == {str(c): int((pool.y[expected] == c).sum()) for c in range(10)}
    assert job.progress is not None and job.progress["fraction"] == pytest.approx(1.0)

    record = ctx.store.get_dataset(result["dataset_id"], owner="o")
    assert record.num_samples == result["kept"] and record.sample_shape == [8, 8, 1]
    assert record.sha256 == result["dataset_sha256"] and record.name == "builtin:digits-hard"
    kept = load_npz(ctx.artifacts.blob_path(record.sha256))
    np.testing.assert_array_equal(kept.x, pool.x[expected])
    np.testing.assert_array_equal(kept.y, pool.y[expected])
    artifact = ctx.artifacts.job_artifact_path(job_id, hard_sets.DATASET_ARTIFACT).read_bytes()
    assert artifact == ctx.artifacts.blob_path(record.sha256).read_bytes()

    # The same request again, surrogates in the other order, finds the same dataset instead of adding one.
    again = _job(
        ctx, pool_dataset_id="builtin:digits", surrogate_model_ids=models, min_confidence=threshold, name="x"
    )
    assert hard_sets.run_hard_set(ctx, again) == "succeeded"
    assert ctx.store.get_job(again).result["dataset_id"] == record.id  # type: ignore[index]
    assert len(ctx.store.list_datasets("o")) == 1
    assert hard_sets.run_hard_set(ctx, job_id) is None  # a redelivery of a finished job does nothing


def test_nothing_kept_succeeds_without_a_dataset_and_says_why(ctx: WorkerContext, digits_keras: Path) -> None:
    pool = load_builtin("builtin:digits:test")
    probabilities = [_probabilities(digits_keras, pool.x[:30])]
    assert not _misses(probabilities, pool.y[:30], 1.0)[0].any()  # the premise: no miss is that sure
    model_id = ready_model(ctx, digits_keras)
    job_id = _job(
        ctx,
        pool_dataset_id="builtin:digits:test",
        surrogate_model_ids=[model_id],
        min_confidence=1.0,
        max_samples=30,
    )
    assert hard_sets.run_hard_set(ctx, job_id) == "succeeded"
    result = ctx.store.get_job(job_id).result
    assert result is not None and result["kept"] == 0 and result["dataset_id"] is None
    assert result["pool_size"] == 30 and "no dataset was made" in result["message"]
    assert ctx.store.list_datasets("o") == []


def test_an_uploaded_pool_in_its_own_range_keeps_its_values(ctx: WorkerContext, digits_keras: Path) -> None:
    # An upload in [0, 255] for a model trained on [0, 1]: its outputs saturate, so its mistakes are
    # confident; what matters is that the new dataset holds the pool's own values, not rescaled ones.
    digits = load_builtin("builtin:digits:test")
    pool = ArrayDataset(digits.x[:40] * 255.0, digits.y[:40], "", "pool")
    path = ctx.artifacts.temp_path(suffix=".npz")
    hard_sets.write_npz(path, x=pool.x, y=pool.y)
    blob = ctx.artifacts.put_file(path)
    path.unlink(missing_ok=True)  # put_file moved it in
    dataset, _ = ctx.store.add_dataset(
        owner="o", name="pool", sha256=blob.sha256, size_bytes=blob.size_bytes, num_samples=40,
        sample_shape=[8, 8, 1], num_classes=10, min_value=0.0, max_value=255.0,
    )  # fmt: skip
    model_id = ready_model(ctx, digits_keras)
    job_id = _job(
        ctx,
        pool_dataset_id=dataset.id,
        surrogate_model_ids=[model_id],
        min_confidence=0.0,
        input_range=[0, 255],
    )
    assert hard_sets.run_hard_set(ctx, job_id) == "succeeded"
    result = ctx.store.get_job(job_id).result
    assert result is not None
    expected = _misses([_probabilities(digits_keras, pool.x)], pool.y, 0.0)[0]
    assert result["kept"] == int(expected.sum()) > 0
    kept = load_npz(ctx.artifacts.blob_path(ctx.store.get_dataset(result["dataset_id"]).sha256))
    np.testing.assert_array_equal(kept.x, pool.x[expected])


def test_a_missing_surrogate_fails_the_job_with_a_sentence(ctx: WorkerContext, digits_keras: Path) -> None:
    model_id = ready_model(ctx, digits_keras)
    job_id = _job(ctx, pool_dataset_id="builtin:digits:test", surrogate_model_ids=[model_id, "mdl_gone"])
    assert hard_sets.run_hard_set(ctx, job_id) == "failed"
    job = ctx.store.get_job(job_id)
    assert job.error == {"type": "ModelLoadError", "detail": "model mdl_gone no longer exists"}
    assert ctx.store.list_datasets("o") == []


def _upload_pool(ctx: WorkerContext, x: np.ndarray, y: np.ndarray) -> str:
    path = ctx.artifacts.temp_path(suffix=".npz")
    hard_sets.write_npz(path, x=x, y=y)
    blob = ctx.artifacts.put_file(path)
    path.unlink(missing_ok=True)  # put_file moved it in
    dataset, _ = ctx.store.add_dataset(
        owner="o", name="pool", sha256=blob.sha256, size_bytes=blob.size_bytes, num_samples=len(y),
        sample_shape=list(x.shape[1:]), num_classes=int(y.max()) + 1, min_value=float(x.min()),
        max_value=float(x.max()),
    )  # fmt: skip
    return dataset.id


def test_cancelling_a_running_hard_set_stops_it(ctx: WorkerContext, digits_keras: Path) -> None:
    model_id = ready_model(ctx, digits_keras)
    digits = load_builtin("builtin:digits")
    pool = _upload_pool(ctx, np.tile(digits.x, (10, 1, 1, 1)), np.tile(digits.y, 10))
    # One sample a batch over 17,970 samples: many seconds, with a chance to stop between every two batches.
    job_id = _job(ctx, pool_dataset_id=pool, surrogate_model_ids=[model_id], batch_size=1)

    def cancel_when_running() -> None:
        while not (ctx.store.get_job(job_id).progress or {}).get("fraction"):
            time.sleep(0.02)
        ctx.store.request_cancel(job_id, owner="o")

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    assert hard_sets.run_hard_set(ctx, job_id) == "cancelled"
    canceller.join()
    job = ctx.store.get_job(job_id)
    assert job.status == "cancelled" and job.result is None
    assert [d.id for d in ctx.store.list_datasets("o")] == [pool]  # nothing registered
