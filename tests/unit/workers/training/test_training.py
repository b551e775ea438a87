"""Adversarial training: robustness gains, export, resume, reproducibility, cancel, errors, rules."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.domain.datasets import ArrayDataset
from service.domain.results import Progress
from service.domain.specs import PGDSpec, TrainingOptions, TrainingSpec
from workers.models.loading import LoadedModel, load_model
from workers.training import TrainingCancelled, TrainingError, TrainingOutcome, split_validation, train
from workers.training import checkpoint as ckpt
from workers.training.checkpoint import RunState
from workers.training.schedules import best_epoch, collapse, eps_at, learning_rate_at, patience_exhausted
from workers.training.trainer import AdversarialTrainer

ROBUST_CHECK = [PGDSpec(eps=0.2, steps=20)]


def subset(data: ArrayDataset, n: int, seed: int = 0) -> ArrayDataset:
    """n samples in a seeded random order: the built-in splits are sorted by class."""
    order = np.random.default_rng(seed).permutation(data.num_samples)[:n]
    return ArrayDataset(data.x[order], data.y[order], f"{data.sha256[:48]}{n:08d}{seed:08d}", data.name)


@pytest.fixture(scope="module")
def train_small(mnist_train: ArrayDataset) -> ArrayDataset:
    return subset(mnist_train, 2000)


@pytest.fixture(scope="module")
def val_small(mnist_test: ArrayDataset) -> ArrayDataset:
    return subset(mnist_test, 500)


def fresh(model_files: dict[str, Path], key: str = "keras") -> LoadedModel:
    """A new copy of the clean-trained `mnist_cnn`: training changes a model in place."""
    return load_model(model_files[key], sha256=key.ljust(64, "0"))


def robust_before_after(outcome: TrainingOutcome) -> tuple[float, float]:
    before, after = outcome.result.before, outcome.result.after
    assert before is not None and after is not None
    return before.attacks[0].robust_accuracy, after.attacks[0].robust_accuracy


@pytest.fixture(scope="module")
def fgsm_rs(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path_factory: Any
) -> TrainingOutcome:
    spec = TrainingOptions(
        method="fgsm-rs", eps=0.2, epochs=3, batch_size=100, validation_samples=200, evaluate=ROBUST_CHECK
    )
    return train(
        fresh(model_files), train_small, val_small, spec, checkpoint_dir=tmp_path_factory.mktemp("fgsm")
    )


def test_fgsm_rs_raises_pgd_robust_accuracy(fgsm_rs: TrainingOutcome) -> None:
    before, after = robust_before_after(fgsm_rs)
    # Measured: 0.17 -> 0.69 with 4,000 samples, 0.15 -> 0.57 with these 2,000. A third of the samples
    # turned robust is far beyond seed noise (a few points) and far from what a broken step would give.
    assert after >= before + 0.3, (before, after)
    result = fgsm_rs.result
    assert result.after is not None and result.after.clean_accuracy >= 0.9
    assert [h.epoch for h in result.history] == [1, 2, 3] and result.epochs_completed == 3
    assert result.best_epoch == 3 and not result.rolled_back and not result.stopped_early
    assert result.history[-1].eps == pytest.approx(0.2)
    assert result.num_train_samples == 2000 and result.num_validation_samples == 500
    assert result.seconds > 0 and all(h.seconds > 0 for h in result.history)


def test_fgsm_rs_from_previous_perturbations_raises_pgd_robust_accuracy(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    spec = TrainingOptions(
        method="fgsm-rs",
        fgsm_start="previous",
        eps=0.2,
        epochs=3,
        batch_size=100,
        validation_samples=200,
        evaluate=ROBUST_CHECK,
    )
    outcome = train(fresh(model_files), train_small, val_small, spec, checkpoint_dir=tmp_path)
    before, after = robust_before_after(outcome)
    # Measured 0.15 -> 0.61 here (random starts, the test above: 0.15 -> 0.57); the same bar as there.
    assert after >= before + 0.3, (before, after)
    # The starts of the next epoch are in the checkpoint: one per sample, inside the eps ball, not all zero.
    saved = ckpt.load(tmp_path)
    assert saved is not None and saved.perturbations is not None
    assert saved.perturbations.shape == train_small.x.shape
    assert 0.1 < float(np.abs(saved.perturbations).max()) <= 0.2 + 1e-6


def test_previous_starts_feed_the_fgsm_step() -> None:
    import tensorflow as tf

    from workers.training.methods import MethodConfig, adversarial_inputs

    config = MethodConfig("fgsm-rs", "linf", 1, 0.0, 0.0, (0.0, 1.0), previous_start=True)
    weights = tf.constant(np.random.default_rng(0).normal(size=(4, 3)), tf.float32)
    x = tf.constant(np.full((5, 4), 0.5), tf.float32)
    y = tf.constant([0, 1, 2, 0, 1], tf.int64)
    start = tf.constant(np.random.default_rng(1).uniform(-0.3, 0.3, size=(5, 4)), tf.float32)

    def run(have_previous: bool, step_size: float) -> np.ndarray:
        out = adversarial_inputs(
            config,
            lambda v: tf.matmul(v, weights),
            x,
            y,
            eps=tf.constant(0.2),
            step_size=tf.constant(step_size),
            seed=tf.constant([3, 4], tf.int64),
            previous=(start, tf.constant(have_previous)),
        )
        return np.asarray(out)

    # With no step the input is the previous start, projected into the eps ball; without one, random.
    np.testing.assert_allclose(run(True, 0.0), np.clip(0.5 + start.numpy(), 0.3, 0.7), atol=1e-6)
    assert not np.allclose(run(False, 0.0), np.clip(0.5 + start.numpy(), 0.3, 0.7))
    stepped = run(True, 0.1)
    assert np.all(np.abs(stepped - 0.5) <= 0.2 + 1e-6) and not np.allclose(stepped, run(True, 0.0))


def test_previous_starts_too_large_for_a_worker_are_refused(
    model_files: dict[str, Path], val_small: ArrayDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.training import starts

    monkeypatch.setattr(starts, "MAX_BYTES", 1000)
    spec = TrainingOptions(method="fgsm-rs", fgsm_start="previous", eps=0.1, epochs=1)
    with pytest.raises(TrainingError, match="one perturbation per training sample.*fgsm_start 'random'"):
        train(fresh(model_files), val_small, val_small, spec, checkpoint_dir=tmp_path)


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_pgd_and_trades_improve_robust_accuracy(
    method: str,
    model_files: dict[str, Path],
    train_small: ArrayDataset,
    val_small: ArrayDataset,
    tmp_path: Path,
) -> None:
    spec = TrainingOptions(
        method=method,  # type: ignore[arg-type]
        eps=0.2,
        steps=3,
        epochs=2,
        batch_size=100,
        validation_samples=100,
        beta=6.0,
        evaluate=ROBUST_CHECK,
    )
    outcome = train(fresh(model_files), subset(train_small, 1000), val_small, spec, checkpoint_dir=tmp_path)
    before, after = robust_before_after(outcome)
    # Measured 0.16 -> 0.43 (pgd) and 0.16 -> 0.44 (trades) in these two short epochs; a gain of 0.15 is
    # well above seed noise on 500 samples (a few points) and out of reach of a step that does not learn.
    assert after >= before + 0.15, (method, before, after)


def test_pgd_with_clean_fraction_runs(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    spec = TrainingOptions(
        method="pgd", eps=0.2, steps=2, epochs=1, batch_size=100, clean_fraction=0.5, validation_samples=100
    )
    result = train(
        fresh(model_files), subset(train_small, 500), val_small, spec, checkpoint_dir=tmp_path
    ).result
    # Measured 0.88 to 0.93 over sessions (the fixture model is retrained in each, and TensorFlow's CPU
    # kernels are not bit-reproducible across processes), once below 0.85 on a loaded machine; a step that
    # broke the model would leave it far below 0.8.
    assert result.history[0].clean_accuracy >= 0.8


def test_exports_reproduce_the_trained_model(
    fgsm_rs: TrainingOutcome, val_small: ArrayDataset, tmp_path: Path
) -> None:
    import keras
    import tensorflow as tf

    trained = np.argmax(fgsm_rs.model.logits(tf.constant(val_small.x)).numpy(), axis=1)
    with zipfile.ZipFile(fgsm_rs.saved_model_zip) as zf:
        zf.extractall(tmp_path / "sm")
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    out = loaded.signatures["serving_default"](tf.constant(val_small.x))
    exported = np.argmax(next(iter(out.values())).numpy(), axis=1)
    assert np.array_equal(exported, trained)
    assert fgsm_rs.keras_path is not None
    reloaded = keras.saving.load_model(fgsm_rs.keras_path, safe_mode=True)
    assert np.array_equal(np.argmax(reloaded.predict(val_small.x, verbose=0), axis=1), trained)
    after = fgsm_rs.result.after
    assert after is not None and (trained == val_small.y).mean() == pytest.approx(after.clean_accuracy)


def test_saved_model_upload_trains_and_exports(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    import tensorflow as tf

    model = fresh(model_files, "saved_model_zip")
    x = tf.constant(val_small.x)
    start = model.logits(x).numpy()
    spec = TrainingOptions(method="fgsm-rs", eps=0.2, epochs=1, batch_size=100, validation_samples=100)
    outcome = train(model, subset(train_small, 500), val_small, spec, checkpoint_dir=tmp_path / "ck")
    trained = model.logits(x).numpy()
    assert not np.allclose(start, trained)  # the SavedModel's own variables were trained
    assert outcome.keras_path is None and any("SavedModel only" in n for n in outcome.result.notes)
    with zipfile.ZipFile(outcome.saved_model_zip) as zf:
        zf.extractall(tmp_path / "sm")
    out = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](x)
    np.testing.assert_allclose(next(iter(out.values())).numpy(), trained, rtol=1e-4, atol=1e-4)
    # The export is itself a valid upload: Parry loads it back and it predicts the same.
    again = load_model(outcome.saved_model_zip)
    assert np.array_equal(np.argmax(again.logits(x).numpy(), 1), np.argmax(trained, 1))


def test_softmax_head_is_trained_on_logits_and_kept(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    import keras

    spec = TrainingOptions(method="fgsm-rs", eps=0.2, epochs=1, batch_size=100, validation_samples=100)
    data = subset(train_small, 300)
    runs = {}
    for key in ("keras", "keras_softmax"):
        runs[key] = train(fresh(model_files, key), data, val_small, spec, checkpoint_dir=tmp_path / key)
    assert runs["keras_softmax"].model.output == "probabilities"
    # Same weights, and the softmax model trains on the logits under its head: the very same run.
    assert history_without_time(runs["keras_softmax"]) == history_without_time(runs["keras"])
    path = runs["keras_softmax"].keras_path
    assert path is not None
    probs = keras.saving.load_model(path, safe_mode=True).predict(val_small.x[:20], verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # the head is still there


# Resume, reproducibility, cancel

TINY = TrainingOptions(method="fgsm-rs", eps=0.2, epochs=3, batch_size=100, validation_samples=100, seed=7)


class StopAfter:
    """A should_stop that answers True from its `limit`-th call on (it is asked before every batch)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.calls = limit, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.limit


def weights(model: LoadedModel) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.keras_model.get_weights()]


def history_without_time(outcome: TrainingOutcome) -> list[dict[str, Any]]:
    return [h.model_dump(exclude={"seconds"}) for h in outcome.result.history]


@pytest.mark.parametrize("start", ["random", "previous"])
def test_resume_continues_from_the_checkpoint_and_ends_identical(
    start: str,
    model_files: dict[str, Path],
    train_small: ArrayDataset,
    val_small: ArrayDataset,
    tmp_path: Path,
) -> None:
    data = subset(train_small, 600)  # 6 batches an epoch, then one validation batch
    spec = TINY.model_copy(update={"fgsm_start": start})
    straight_model = fresh(model_files)
    straight = train(straight_model, data, val_small, spec, checkpoint_dir=tmp_path / "a")
    again_model = fresh(model_files)
    again = train(again_model, data, val_small, spec, checkpoint_dir=tmp_path / "b")
    # Same seed: the same history to the last bit, and the same weights.
    assert history_without_time(again) == history_without_time(straight)
    assert all(
        np.array_equal(a, b) for a, b in zip(weights(again_model), weights(straight_model), strict=True)
    )

    # Stop during epoch 2 (after the uploaded model's validation batch, epoch 1's 6 batches and 1
    # validation batch, then 3 batches of epoch 2).
    with pytest.raises(TrainingCancelled):
        train(
            fresh(model_files),
            data,
            val_small,
            spec,
            checkpoint_dir=tmp_path / "c",
            should_stop=StopAfter(12),
        )
    saved = ckpt.load(tmp_path / "c")
    assert saved is not None and (saved.state.epoch, saved.state.batch) == (1, 3)

    # A redelivered job: the original model file again, the same checkpoint folder.
    resumed_model = fresh(model_files)
    counter = StopAfter(10**9)
    resumed = train(resumed_model, data, val_small, spec, checkpoint_dir=tmp_path / "c", should_stop=counter)
    assert resumed.result.resumed
    # Epoch 0's check, epoch 1 and the first 3 batches of epoch 2 were not redone: 3 + 1 + 6 + 1 remain.
    assert counter.calls == 11
    assert history_without_time(resumed) == history_without_time(straight)
    assert all(
        np.array_equal(a, b) for a, b in zip(weights(resumed_model), weights(straight_model), strict=True)
    )


def test_different_seed_gives_a_different_run(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    data = subset(train_small, 300)
    spec = TINY.model_copy(update={"epochs": 1})
    runs = [
        train(
            fresh(model_files),
            data,
            val_small,
            spec.model_copy(update={"seed": s}),
            checkpoint_dir=tmp_path / str(s),
        )
        for s in (1, 2)
    ]
    assert runs[0].result.history[0].loss != runs[1].result.history[0].loss


def test_cancel_mid_epoch_stops_within_a_batch(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    progress: list[Progress] = []
    with pytest.raises(TrainingCancelled):
        train(
            fresh(model_files),
            subset(train_small, 600),
            val_small,
            TINY,
            checkpoint_dir=tmp_path,
            should_stop=StopAfter(4),
            progress=progress.append,
        )
    saved = ckpt.load(tmp_path)
    assert saved is not None and (saved.state.epoch, saved.state.batch) == (0, 2)  # no batch after the stop
    assert progress and "epoch 1/3 batch" in progress[-1].stage


def test_a_finished_checkpoint_is_not_trained_again(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    data = subset(train_small, 300)
    spec = TINY.model_copy(update={"epochs": 1})
    first_model = fresh(model_files)
    first = train(first_model, data, val_small, spec, checkpoint_dir=tmp_path)
    counter = StopAfter(10**9)
    second_model = fresh(model_files)
    second = train(second_model, data, val_small, spec, checkpoint_dir=tmp_path, should_stop=counter)
    assert counter.calls == 0
    assert second.result.history == first.result.history
    assert all(np.array_equal(a, b) for a, b in zip(weights(first_model), weights(second_model), strict=True))


def test_a_checkpoint_of_other_options_is_ignored(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    data = subset(train_small, 300)
    spec = TINY.model_copy(update={"epochs": 1})
    train(fresh(model_files), data, val_small, spec, checkpoint_dir=tmp_path)
    other = train(
        fresh(model_files), data, val_small, spec.model_copy(update={"eps": 0.1}), checkpoint_dir=tmp_path
    )
    assert not other.result.resumed and any("ignored" in n for n in other.result.notes)


def test_progress_reports_epoch_batch_loss_and_eta(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    progress: list[Progress] = []
    spec = TINY.model_copy(update={"epochs": 2, "evaluate": [PGDSpec(eps=0.2, steps=2)]})
    train(
        fresh(model_files),
        subset(train_small, 300),
        val_small,
        spec,
        checkpoint_dir=tmp_path,
        progress=progress.append,
    )
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = [p.stage for p in progress]
    assert any(s.startswith("epoch 2/2") and "robust" in s for s in stages)
    assert any(s.startswith("evaluate before") for s in stages) and any(
        s.startswith("evaluate after") for s in stages
    )
    assert any(p.eta_seconds is not None and p.eta_seconds > 0 for p in progress)


# Errors a user can cause


def test_model_without_variables_is_refused(tmp_path: Path, val_small: ArrayDataset) -> None:
    import tensorflow as tf

    weights_ = tf.constant(np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32))

    class Frozen(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
        def serve(self, x: tf.Tensor) -> tf.Tensor:
            return tf.matmul(tf.reshape(x, (-1, 784)), weights_)

    module = Frozen()
    tf.saved_model.save(module, str(tmp_path / "frozen"), signatures={"serving_default": module.serve})
    model = load_model(tmp_path / "frozen", output="logits")
    spec = TrainingOptions(method="pgd", eps=0.1, epochs=1)
    with pytest.raises(TrainingError, match="no trainable variables") as info:
        train(model, val_small, val_small, spec, checkpoint_dir=tmp_path / "ck")
    assert "\n" not in str(info.value) and str(info.value).endswith(".")


def test_data_that_does_not_fit_is_refused(
    model_files: dict[str, Path], val_small: ArrayDataset, tmp_path: Path
) -> None:
    spec = TrainingOptions(method="fgsm-rs", eps=0.1, epochs=1)
    model = fresh(model_files)
    bad_labels = ArrayDataset(val_small.x, val_small.y + 5, "1" * 64, "bad")
    with pytest.raises(TrainingError, match="labels range over"):
        train(model, bad_labels, val_small, spec, checkpoint_dir=tmp_path)
    bad_range = ArrayDataset(val_small.x * 255, val_small.y, "2" * 64, "bad")
    with pytest.raises(TrainingError, match="outside input_range"):
        train(model, val_small, bad_range, spec, checkpoint_dir=tmp_path)
    bad_shape = ArrayDataset(val_small.x[:, :20], val_small.y, "3" * 64, "bad")
    with pytest.raises(TrainingError, match="shape"):
        train(model, bad_shape, val_small, spec, checkpoint_dir=tmp_path)


def test_a_non_finite_loss_fails_with_a_sentence(
    model_files: dict[str, Path], val_small: ArrayDataset, tmp_path: Path
) -> None:
    model = fresh(model_files)
    kernel = model.keras_model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))  # what a diverged upload or step leaves
    spec = TrainingOptions(method="fgsm-rs", eps=0.1, epochs=1, batch_size=50)
    with pytest.raises(TrainingError, match="loss became nan at epoch 1, batch 1, and no epoch beat"):
        train(model, val_small, val_small, spec, checkpoint_dir=tmp_path)


def test_training_spec_validation() -> None:
    body = {"model_id": "mdl_1", "dataset_id": "builtin:mnist-5k:train", "method": "pgd", "eps": 0.3}
    spec = TrainingSpec.model_validate(body)
    assert spec.steps == 10 and spec.epochs == 10 and spec.validation_dataset_id is None
    assert spec.step_size_at_full_eps() == pytest.approx(0.075) and spec.ramp_epochs() == pytest.approx(
        10 / 3
    )
    assert not spec.guard_enabled()
    fast = TrainingSpec.model_validate({**body, "method": "fgsm-rs"})
    assert fast.guard_enabled() and fast.step_size_at_full_eps() == pytest.approx(0.375)
    assert fast.fgsm_start == "random"
    prior = TrainingSpec.model_validate({**body, "method": "fgsm-rs", "fgsm_start": "previous"})
    assert prior.step_size_at_full_eps() == pytest.approx(0.15)
    for bad in (
        {"stpes": 3},
        {"method": "free"},
        {"eps": 0},
        {"epochs": 0},
        {"learning_rate": -1},
        {"method": "trades", "clean_fraction": 0.5},
        {"clean_fraction": 1.0},
        {"fgsm_start": "previous"},  # pgd
        {"method": "fgsm-rs", "fgsm_start": "last"},
        {"input_range": [1.0, 0.0]},
        {"evaluate": [{"name": "pgd", "eps": 0.3, "stpes": 40}]},
    ):
        with pytest.raises(ValidationError):
            TrainingSpec.model_validate({**body, **bad})


# Rules: schedules and the overfitting guard


def test_eps_ramp_and_learning_rate_schedules() -> None:
    assert [eps_at(s, eps=0.3, ramp_steps=3) for s in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert eps_at(0, eps=0.3, ramp_steps=0) == 0.3
    assert learning_rate_at(5, base=0.1, total_steps=10, schedule="constant") == 0.1
    cosine = [learning_rate_at(s, base=1.0, total_steps=11, schedule="cosine") for s in range(11)]
    assert (
        cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    )
    cycle = [learning_rate_at(s, base=1.0, total_steps=100, schedule="onecycle") for s in range(100)]
    assert (
        0 < cycle[0] < 0.05 and max(cycle) == pytest.approx(1.0, abs=0.03) and cycle[-1] == pytest.approx(0.0)
    )
    assert int(np.argmax(cycle)) in range(38, 42)


def test_collapse_and_patience_rules() -> None:
    assert collapse([0.4, 0.5, 0.45]) is None  # noise
    assert collapse([0.4, 0.5, 0.02]) == 1  # catastrophic overfitting: back to the best epoch
    assert collapse([0.01, 0.1, 0.04]) is None  # below half but by less than 10 points: still ramping
    assert collapse([0.5]) is None
    assert best_epoch([0.3, 0.5, 0.5]) == 1 and best_epoch([]) is None
    assert patience_exhausted([0.3, 0.5, 0.4, 0.45], 2)
    assert not patience_exhausted([0.3, 0.5, 0.4, 0.55], 2)
    assert not patience_exhausted([0.3, 0.5, 0.4, 0.45], None)


def test_guard_rolls_back_to_the_best_epoch_and_says_so(model_files: dict[str, Path], tmp_path: Path) -> None:
    """The trainer's reaction to a collapsed history (synthetic: real catastrophic overfitting is slow)."""
    model = fresh(model_files)
    trainer = AdversarialTrainer(model, TINY, checkpoint_dir=tmp_path)
    best = [w + 1.0 for w in trainer._weights()]
    state = RunState("x", history=[record(1, 0.3), record(2, 0.6)])
    state.best_file = ckpt.save_best(tmp_path, 2, best)
    state.history.append(record(3, 0.05))
    trainer._after_epoch(state)
    assert state.rolled_back and state.finished and not state.stopped_early
    assert all(np.array_equal(a, b) for a, b in zip(trainer._weights(), best, strict=True))
    assert (
        "catastrophic overfitting at epoch 3" in state.notes[0] and "rolled back to epoch 2" in state.notes[0]
    )


def test_guard_is_off_for_pgd_but_patience_stops_early(model_files: dict[str, Path], tmp_path: Path) -> None:
    model = fresh(model_files)
    options = TINY.model_copy(update={"method": "pgd", "early_stop_patience": 2})
    trainer = AdversarialTrainer(model, options, checkpoint_dir=tmp_path)
    state = RunState("x", history=[record(1, 0.3), record(2, 0.6)])
    state.best_file = ckpt.save_best(tmp_path, 2, trainer._weights())
    state.history.append(record(3, 0.05))
    trainer._after_epoch(state)
    assert not state.finished  # a collapse alone does not stop pgd training
    state.history.append(record(4, 0.5))
    trainer._after_epoch(state)
    assert state.stopped_early and state.finished and "kept epoch 2" in state.notes[0]


def record(epoch: int, robust: float) -> dict[str, Any]:
    return {
        "epoch": epoch, "loss": 1.0, "train_accuracy": 0.5, "clean_accuracy": 0.9, "robust_accuracy": robust,
        "eps": 0.2, "learning_rate": 1e-3, "seconds": 1.0,
    }  # fmt: skip


def test_split_validation_is_a_seeded_disjoint_hold_out(val_small: ArrayDataset) -> None:
    part, held = split_validation(val_small, fraction=0.1, seed=3)
    assert (part.num_samples, held.num_samples) == (450, 50)
    rows = {r.tobytes() for r in part.x} & {r.tobytes() for r in held.x}
    assert not rows  # no sample in both (the digits are distinct images)
    again = split_validation(val_small, fraction=0.1, seed=3)[1]
    assert np.array_equal(again.x, held.x) and again.sha256 == held.sha256 != part.sha256
    assert not np.array_equal(split_validation(val_small, fraction=0.1, seed=4)[1].y, held.y)


# Divergence: the case, and the rules


def test_a_collapsing_training_fails_and_names_the_cause(
    model_files: dict[str, Path], train_small: ArrayDataset, val_small: ArrayDataset, tmp_path: Path
) -> None:
    """fgsm-rs with a constant learning rate of 0.01 takes the clean CNN to one class within epoch 1."""
    spec = TrainingOptions(
        method="fgsm-rs",
        eps=0.3,
        epochs=2,
        batch_size=100,
        learning_rate=0.01,
        eps_ramp_epochs=0,
        validation_samples=200,
    )
    with pytest.raises(TrainingError) as caught:
        train(fresh(model_files), train_small, val_small, spec, checkpoint_dir=tmp_path)
    message = str(caught.value)
    assert "diverged: clean accuracy" in message, message
    assert "at epoch 1" in message  # caught in the first epoch (within it, when at chance)
    assert "no epoch beat the uploaded model" in message and "lower learning_rate (it was 0.01" in message


def test_a_divergence_after_a_good_epoch_rolls_back_and_succeeds(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    """The trainer's reaction to a divergence once an epoch beat the uploaded model (synthetic history)."""
    model = fresh(model_files)
    trainer = AdversarialTrainer(model, TINY, checkpoint_dir=tmp_path)
    best = [w + 1.0 for w in trainer._weights()]
    state = RunState("x", history=[record(1, 0.3), record(2, 0.6)], uploaded={"clean": 0.95, "robust": 0.1})
    state.best_file = ckpt.save_best(tmp_path, 2, best)
    trainer._diverged(state, "the training loss became nan at epoch 3, batch 4", epochs=2)
    assert state.rolled_back and state.finished and state.kept == 1
    assert all(np.array_equal(a, b) for a, b in zip(trainer._weights(), best, strict=True))
    assert "rolled back to epoch 2" in state.notes[0] and "loss became nan" in state.notes[0]
    worse = RunState("y", history=[record(1, 0.05)], uploaded={"clean": 0.95, "robust": 0.1})
    worse.best_file = ckpt.save_best(tmp_path, 1, best)
    with pytest.raises(TrainingError, match="no epoch beat the uploaded model"):
        trainer._diverged(worse, "clean accuracy fell to 9.0%, chance level at epoch 2", epochs=1)


def test_divergence_rules() -> None:
    from workers.training import divergence as d

    labels = np.array([0] * 30 + [1] * 10 + [2] * 10)
    assert d.chance_level(labels) == pytest.approx(0.6)
    assert d.loss_problem(float("nan"), 0.5) == "the training loss became nan"
    assert d.loss_problem(float("inf"), None) == "the training loss became inf"
    assert d.loss_problem(2.0, 0.3) is None  # a loss rising while eps ramps up
    assert "exploded to 100" in str(d.loss_problem(100.0, 0.3))
    uploaded = d.Check(0.95, 0.2)
    assert "chance level" in str(
        d.check_problem(d.Check(0.08, 0.0), uploaded=uploaded, best=uploaded, chance=0.1)
    )
    # A model that starts at chance (trained from scratch) may stay there for a while.
    fresh_model = d.Check(0.1, 0.0)
    assert d.check_problem(d.Check(0.1, 0.0), uploaded=fresh_model, best=fresh_model, chance=0.1) is None
    best = d.Check(0.9, 0.6)
    both = d.check_problem(d.Check(0.4, 0.26), uploaded=uploaded, best=best, chance=0.1)
    assert both is not None and "both collapsed" in both
    assert (
        d.check_problem(d.Check(0.85, 0.2), uploaded=uploaded, best=best, chance=0.1) is None
    )  # robust only
    # Two classes left (about 20% clean) and no robustness: collapsed, though not quite at chance.
    clean_model = d.Check(0.96, 0.005)
    two = d.check_problem(d.Check(0.22, 0.0), uploaded=clean_model, best=clean_model, chance=0.1)
    assert two is not None and "collapsed from 96.0% to 22.0% with no robustness gained" in two
    # The usual trade of adversarial training: some clean accuracy for robust accuracy.
    assert d.check_problem(d.Check(0.45, 0.3), uploaded=clean_model, best=clean_model, chance=0.1) is None
    # A binary task: chance is 50%, and 52% is at it.
    assert d.at_chance(0.52, 0.5) and not d.at_chance(0.7, 0.5)
    assert d.beats(d.Check(0.9, 0.3), uploaded) and not d.beats(d.Check(0.99, 0.2), uploaded)
    assert d.worse_on_both(d.Check(0.9, 0.1), uploaded) and not d.worse_on_both(d.Check(0.96, 0.1), uploaded)
    assert "onecycle" in d.hint(0.01, "constant") and "onecycle" not in d.hint(0.01, "cosine")
