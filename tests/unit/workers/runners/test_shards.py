"""Sharded evaluation called as plain functions: real store, real artifacts, a real tiny Keras model.

The central check: the shards of an evaluation, run by different "workers" in any order, merge into the
report the whole evaluation gives on one worker, number for number (timing aside).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.specs import ATTACK_NAMES
from service.domain.tasks import RUN_EVALUATION_SHARD
from service.settings import Settings
from service.store.shards import ShardSpan, ShardStore, parse_shard_key, shard_key
from tests.workerkit import Sent, worker_context
from workers.context import WorkerContext
from workers.runners import sharded as shards
from workers.runners import validation

SPEC = {
    "dataset_id": "builtin:digits:test",
    "attacks": [
        {"name": "fgsm", "eps": [0.05, 0.1]},
        {"name": "pgd", "eps": 0.1, "steps": 5, "restarts": 2},
        {"name": "pgd", "eps": 0.1, "steps": 3, "targeted": True},
    ],
    "batch_size": 32,
    "seed": 7,
}
# autoattack over two eps: stages and cumulative rows. The model runs in a child process, so the version
# is a real one (the small test versions are the parent's only); tests/unit/workers/evaluation/
# test_ensemble.py merges shards of the small versions in process.
AUTOATTACK_SPEC = {
    **SPEC,
    "attacks": [
        {"name": "fgsm", "eps": 0.1},
        {"name": "autoattack", "eps": [0.05, 0.1], "version": "fast"},
        {"name": "pgd", "eps": 0.1, "steps": 3, "targeted": True},
    ],
}
# OOD scores are per sample from the clean pass: the merge must judge them as one worker does.
OOD_SPEC = {**SPEC, "ood": {"dataset_id": "builtin:digits:train", "scores": ["energy", "msp"]}}
# Corruptions: each shard scores its own range of all the samples, the last one the rest.
CORRUPTIONS_SPEC = {
    **SPEC,
    "corruptions": {"names": ["gaussian_noise", "contrast", "motion_blur"], "severities": [1, 5]},
}
TIMING = {"seconds", "samples_per_second"}


@pytest.fixture(scope="module")
def digits_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from service.domain.datasets import load_builtin
    from tests.modelzoo import train_clean

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, "relu"),
            keras.layers.Dense(10),
        ]
    )
    train_clean(model, load_builtin("builtin:digits:train"), epochs=3)
    path = tmp_path_factory.mktemp("models") / "digits.keras"
    model.save(path)
    return path


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[WorkerContext]:
    settings = Settings(
        data_dir=tmp_path, redis_url="redis://unused", job_lease_s=30, shard_min_samples=100, shard_size=64
    )
    with worker_context(settings, worker="coordinator") as context:
        yield context


def _ready_model(ctx: WorkerContext, path: Path) -> str:
    blob = ctx.artifacts.put_file(path)
    record, _ = ctx.store.add_model(
        owner="o",
        name=path.name,
        sha256=blob.sha256,
        format="keras",
        size_bytes=blob.size_bytes,
        output="auto",
    )
    assert validation.validate_model(ctx, record.id) == "ready"
    return record.id


def _job(ctx: WorkerContext, model_id: str, spec: dict[str, Any] = SPEC) -> str:
    job, _ = ctx.store.create_job(owner="o", kind="evaluation", spec={"model_id": model_id, **spec})
    return job.id


def _shard_keys(ctx: WorkerContext) -> list[str]:
    assert isinstance(ctx.send, Sent)
    return [key for task, key in ctx.send if task == RUN_EVALUATION_SHARD]


def _on(ctx: WorkerContext, worker: str) -> WorkerContext:
    return dataclasses.replace(ctx, worker=worker)


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _per_sample(ctx: WorkerContext, job_id: str) -> dict[str, np.ndarray]:
    data = np.load(io.BytesIO(ctx.artifacts.job_artifact_path(job_id, "per_sample.npz").read_bytes()))
    return {name: data[name] for name in data.files}


def test_plan_spans_cover_every_batch_once() -> None:
    spans = shards.plan_spans(1000, 64, 200, 2.0)  # 16 batches, 3 per shard
    assert [(s.batch_start, s.batch_stop) for s in spans] == [
        (0, 3),
        (3, 6),
        (6, 9),
        (9, 12),
        (12, 15),
        (15, 16),
    ]
    assert sum(s.units for s in spans) == 1000 * 2.0
    assert spans[-1].units == (1000 - 15 * 64) * 2.0
    assert shards.plan_spans(0, 64, 200, 2.0) == [ShardSpan(0, 0, 0.0)]  # nothing to attack: one empty shard


def test_shard_keys_round_trip() -> None:
    assert parse_shard_key(shard_key("job_a-b_C", 12)) == ("job_a-b_C", 12)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(SPEC, id="attacks"),
        pytest.param(OOD_SPEC, id="ood"),
        pytest.param(CORRUPTIONS_SPEC, id="corruptions"),
        pytest.param(
            AUTOATTACK_SPEC,
            id="autoattack",
            marks=pytest.mark.skipif("apgd-t" not in ATTACK_NAMES, reason="autoattack's stages are not in"),
        ),
    ],
)
def test_sharded_evaluation_merges_into_the_single_worker_report(
    ctx: WorkerContext, digits_keras: Path, spec: dict[str, Any]
) -> None:
    model_id = _ready_model(ctx, digits_keras)
    whole_ctx = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"shard_min_samples": 10_000})
    )
    whole_id = _job(ctx, model_id, spec)
    assert shards.run_evaluation(whole_ctx, whole_id) == "succeeded"
    assert ShardStore(ctx.store).get_plan(whole_id) is None  # small enough: one task, as before

    job_id = _job(ctx, model_id, spec)
    assert shards.run_evaluation(ctx, job_id) == "running"
    job = ctx.store.get_job(job_id)
    assert (job.status, job.phase, job.worker, job.lease_until) == ("running", "sharded", None, None)
    keys = _shard_keys(ctx)
    store = ShardStore(ctx.store)
    assert len(keys) == store.get_plan(job_id).num_shards > 2  # type: ignore[union-attr]

    # Shards run by three workers, out of order; a redelivered shard is a no-op.
    order = keys[1:] + keys[:1]
    statuses = [shards.run_shard(_on(ctx, f"w{i % 3}"), key) for i, key in enumerate(order)]
    assert statuses == ["succeeded"] * len(keys)
    assert shards.run_shard(_on(ctx, "w9"), keys[0]) is None
    assert {s.worker for s in store.shards(job_id)} == {"w0", "w1", "w2"}

    sharded, whole = ctx.store.get_job(job_id), ctx.store.get_job(whole_id)
    assert sharded.status == "succeeded" and sharded.worker == f"w{(len(keys) - 1) % 3}"  # the last merged
    assert sharded.result is not None and whole.result is not None
    assert _without_timing(sharded.result) == _without_timing(whole.result)
    assert sharded.result["attacks"][2]["robust_accuracy"] < sharded.result["clean_accuracy"]
    assert sharded.result["calibration"] is not None
    if spec is OOD_SPEC:
        assert [row["score"] for row in sharded.result["ood"]] == ["energy", "msp"]
        assert sharded.result["ood"][0]["num_out"] == 1438
    if spec is AUTOATTACK_SPEC:  # the stages and the per-sample stage arrays merged too
        assert [len(row["stages"] or []) for row in sharded.result["attacks"]] == [0, 2, 2, 0]
        assert sharded.result["attacks"][2]["cumulative"] is True
    if spec is CORRUPTIONS_SPEC:
        items = sharded.result["corruptions"]["items"]
        assert [(i["name"], i["severity"]) for i in items] == [
            ("gaussian_noise", 1), ("gaussian_noise", 5), ("contrast", 1), ("contrast", 5),
            ("motion_blur", 1), ("motion_blur", 5),
        ]  # fmt: skip
        assert items[-1]["accuracy"] < sharded.result["clean_accuracy"]
    a, b = _per_sample(ctx, job_id), _per_sample(ctx, whole_id)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not shards.shard_dir(ctx.settings, job_id).exists()  # intermediate arrays are dropped


def test_cancel_stops_the_shards_and_a_failed_shard_fails_the_job(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    model_id = _ready_model(ctx, digits_keras)
    store = ShardStore(ctx.store)

    job_id = _job(ctx, model_id)
    assert shards.run_evaluation(ctx, job_id) == "running"
    first, *rest = _shard_keys(ctx)
    assert shards.run_shard(_on(ctx, "w1"), first) == "succeeded"
    assert ctx.store.request_cancel(job_id, owner="o").status == "running"  # its shards answer next
    assert shards.run_shard(_on(ctx, "w2"), rest[0]) is None  # not claimed: the job is cancelled
    job = ctx.store.get_job(job_id)
    assert job.status == "cancelled"
    assert store.lost_shards(queued_older_than_seconds=600) == []  # nothing left to resend

    ctx.send.clear()  # type: ignore[attr-defined]
    failing = _job(ctx, model_id)
    assert shards.run_evaluation(ctx, failing) == "running"
    key = _shard_keys(ctx)[0]
    shards.shard_dir(ctx.settings, failing).joinpath("clean.npz").write_bytes(b"garbage")
    assert shards.run_shard(_on(ctx, "w1"), key) == "failed"
    job = ctx.store.get_job(failing)
    assert job.status == "failed" and job.error is not None and "Traceback" not in job.error["detail"]


def test_a_dead_shard_worker_is_replaced_after_its_lease(ctx: WorkerContext, digits_keras: Path) -> None:
    model_id = _ready_model(ctx, digits_keras)
    store = ShardStore(ctx.store)
    job_id = _job(ctx, model_id)
    assert shards.run_evaluation(ctx, job_id) == "running"
    keys = _shard_keys(ctx)
    job, index = parse_shard_key(keys[0])
    # A worker claims the shard and dies: its lease runs out.
    assert store.claim_shard(job, index, worker="dead", lease_seconds=0.05) is not None
    assert store.claim_shard(job, index, worker="w1", lease_seconds=30) is None  # still held
    time.sleep(0.1)
    assert [s.key for s in store.lost_shards(queued_older_than_seconds=600)] == [keys[0]]
    for i, key in enumerate(keys):
        assert shards.run_shard(_on(ctx, f"w{i}"), key) == "succeeded"
    shard = store.get_shard(job, index)
    assert shard is not None and (shard.worker, shard.attempts) == ("w0", 2)
    assert ctx.store.get_job(job_id).status == "succeeded"


def test_progress_is_the_sum_of_the_shards_and_cancel_answers_stop(
    ctx: WorkerContext, digits_keras: Path
) -> None:
    model_id = _ready_model(ctx, digits_keras)
    store = ShardStore(ctx.store)
    job_id = _job(ctx, model_id)
    assert shards.run_evaluation(ctx, job_id) == "running"
    plan = store.get_plan(job_id)
    assert plan is not None and plan.clean_units == 359  # the clean pass: one unit per sample
    first, second = store.shards(job_id)[:2]
    for shard in (first, second):
        assert store.claim_shard(job_id, shard.shard_index, worker="w1", lease_seconds=30) is not None
    assert store.report_shard_progress(
        job_id, first.shard_index, worker="w1", fraction=0.5, lease_seconds=30, stage="pgd eps=0.1"
    )
    assert store.report_shard_progress(
        job_id, second.shard_index, worker="w1", fraction=1.0, lease_seconds=30, stage="pgd eps=0.1"
    )
    progress = ctx.store.get_job(job_id).progress
    assert progress is not None
    expected = (plan.clean_units + 0.5 * first.units + second.units) / plan.total_units
    assert progress["fraction"] == pytest.approx(expected)
    assert progress["stage"] == f"pgd eps=0.1 (0 of {plan.num_shards} shards done, 2 running)"
    # Another worker's report is refused; after a cancel every shard is told to stop.
    assert not store.report_shard_progress(
        job_id, first.shard_index, worker="w2", fraction=0.9, lease_seconds=30, stage="x"
    )
    ctx.store.request_cancel(job_id, owner="o")
    assert not store.report_shard_progress(
        job_id, first.shard_index, worker="w1", fraction=0.9, lease_seconds=30, stage="x"
    )
