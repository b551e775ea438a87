"""Evaluation: the report's fields and their relations, sanity warnings, user errors, cancel, progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.results import Progress
from service.domain.specs import EvaluationOptions, FGSMSpec, PGDSpec
from workers.evaluation.engine import EvaluationCancelled, EvaluationError, EvaluationOutcome, evaluate
from workers.evaluation.probes import probe_passes
from workers.models.loading import LoadedModel, from_keras

N = 200
OPTIONS = EvaluationOptions(
    attacks=[
        FGSMSpec(eps=[0.1, 0.3]),
        PGDSpec(eps=[0.1, 0.3], steps=10),
        PGDSpec(eps=0.1, steps=10, restarts=3, loss="cw"),
    ],
    max_samples=N,
    batch_size=64,
    seed=3,
)


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn, sha256="f" * 64)


@pytest.fixture(scope="module")
def outcome(model: LoadedModel, mnist_test: ArrayDataset) -> EvaluationOutcome:
    return evaluate(model, mnist_test, OPTIONS)


def small(
    data: ArrayDataset, n: int = 64, *, x: np.ndarray | None = None, y: np.ndarray | None = None
) -> ArrayDataset:
    return ArrayDataset(data.x[:n] if x is None else x, data.y[:n] if y is None else y, "0" * 64, "small")


def test_result_fields(outcome: EvaluationOutcome, mnist_test: ArrayDataset) -> None:
    result, per = outcome.result, outcome.per_sample
    assert result.num_samples == N
    assert [(a.name, a.eps) for a in result.attacks] == [
        ("fgsm", 0.1), ("fgsm", 0.3), ("pgd", 0.1), ("pgd", 0.3), ("pgd", 0.1),
    ]  # fmt: skip
    assert result.model_sha256 == "f" * 64 and result.dataset_sha256 == mnist_test.sha256
    assert result.seed == 3 and result.input_range == (0.0, 1.0)
    assert set(result.versions) == {"tensorflow", "keras", "numpy", "parry"}
    assert 0.9 < result.clean_accuracy == pytest.approx(per["clean_correct"].mean())
    assert set(result.per_class_clean_accuracy) == {str(c) for c in np.unique(mnist_test.y[:N])}
    assert result.seconds >= sum(a.seconds for a in result.attacks) > 0
    for attack in result.attacks:
        assert attack.spec["eps"] == attack.eps
        assert attack.samples_per_second == pytest.approx(N / attack.seconds)
        assert attack.num_attacked == per["clean_correct"].sum()
    assert result.attacks[2].spec["step_size"] == pytest.approx(2.5 * 0.1 / 10)


def test_per_sample_arrays_agree_with_the_report(outcome: EvaluationOutcome) -> None:
    result, per = outcome.result, outcome.per_sample
    correct, labels = per["clean_correct"], per["labels"]
    for i, attack in enumerate(result.attacks):
        fooled = per[f"fooled_{i}"]
        robust = correct & ~fooled
        assert not fooled[~correct].any()  # only clean-correct samples are attacked
        np.testing.assert_array_equal(robust, correct & (per[f"adv_pred_{i}"] == labels))
        assert attack.robust_accuracy == pytest.approx(robust.mean())
        assert attack.attack_success_rate == pytest.approx(fooled[correct].mean())
        assert attack.mean_perturbation.linf == pytest.approx(per[f"linf_{i}"][correct].mean(), rel=1e-5)
        assert attack.mean_perturbation.l2 == pytest.approx(per[f"l2_{i}"][correct].mean(), rel=1e-5)
        assert per[f"linf_{i}"].max() <= attack.eps + 1e-5
        for cls, value in attack.per_class_robust_accuracy.items():
            assert value == pytest.approx(robust[labels == int(cls)].mean())


def test_worst_case_is_every_attack_failing(outcome: EvaluationOutcome) -> None:
    result, per = outcome.result, outcome.per_sample
    assert [(w.norm, w.eps) for w in result.worst_case] == [("linf", 0.1), ("linf", 0.3)]
    for worst in result.worst_case:
        members = [i for i, a in enumerate(result.attacks) if (a.norm, a.eps) == (worst.norm, worst.eps)]
        assert worst.attacks == [result.attacks[i].name for i in members]
        robust = per["clean_correct"].copy()
        for i in members:
            robust &= ~per[f"fooled_{i}"]
        np.testing.assert_array_equal(per[f"worst_robust_linf_{worst.eps:g}"], robust)
        assert worst.robust_accuracy == pytest.approx(robust.mean())
        assert worst.robust_accuracy <= min(result.attacks[i].robust_accuracy for i in members)


def test_cost_counts_the_engine_work(outcome: EvaluationOutcome) -> None:
    result = outcome.result
    attacked = result.attacks[0].num_attacked
    fgsm, pgd, restarted = result.attacks[0].cost, result.attacks[2].cost, result.attacks[4].cost
    assert (fgsm.forward_passes, fgsm.backward_passes) == (2 * attacked, attacked)
    # PGD: at most 10 gradients per sample (fooled samples stop early) and exactly one scoring pass.
    assert pgd.forward_passes - pgd.backward_passes == attacked and pgd.backward_passes <= 10 * attacked
    assert pgd.forward_per_sample == pytest.approx(pgd.forward_passes / N)
    # Three restarts, each on the samples not yet fooled.
    scored = restarted.forward_passes - restarted.backward_passes
    assert attacked < scored < 3 * attacked and restarted.backward_passes <= 10 * scored
    assert result.cost is not None
    # The clean pass and the model probes (two forward passes on a few samples) come on top.
    probes = probe_passes(N)
    assert result.cost.forward_passes == N + probes + sum(a.cost.forward_passes for a in result.attacks)
    assert result.cost.backward_passes == N + sum(a.cost.backward_passes for a in result.attacks)


def test_no_masking_warning_on_a_normal_cnn(outcome: EvaluationOutcome) -> None:
    # Whether 10-step PGD's last restart still breaks a sample or two depends on the trained weights
    # (the convergence note); any other warning would be a false alarm of gradient masking.
    masking = [w for w in outcome.result.warnings if "the last restart of" not in w]
    assert masking == []


def test_per_sample_file_round_trips(outcome: EvaluationOutcome, tmp_path: Path) -> None:
    outcome.save_per_sample(tmp_path / "samples.npz")
    with np.load(tmp_path / "samples.npz") as saved:
        assert set(saved.files) == set(outcome.per_sample)
        np.testing.assert_array_equal(saved["fooled_3"], outcome.per_sample["fooled_3"])


def test_eps_zero_gives_the_clean_accuracy(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    options = EvaluationOptions(attacks=[PGDSpec(eps=[0.0, 0.05], steps=5)], max_samples=64)
    result = evaluate(model, mnist_test, options).result
    assert result.attacks[0].robust_accuracy == result.clean_accuracy
    assert result.attacks[0].cost.forward_passes == 0
    assert result.attacks[1].robust_accuracy <= result.clean_accuracy


def test_warnings_fire_on_a_gradient_masking_model(mnist_cnn: Any, mnist_test: ArrayDataset) -> None:
    import keras

    class Quantise(keras.layers.Layer):  # type: ignore[misc]
        """Round to 8-bit levels with no gradient: a classic accidental gradient mask."""

        def call(self, x: Any) -> Any:
            return keras.ops.stop_gradient(keras.ops.round(x * 255.0) / 255.0)

    inputs = keras.Input((28, 28, 1))
    masked = from_keras(keras.Model(inputs, mnist_cnn(Quantise()(inputs))))
    options = EvaluationOptions(
        attacks=[FGSMSpec(eps=[0.1, 0.5]), PGDSpec(eps=0.5, steps=5)], max_samples=64, batch_size=64
    )
    warnings = evaluate(masked, mnist_test, options).result.warnings
    assert any("exactly zero on 100.0% of clean samples" in w for w in warnings)
    assert any("eps=0.5, at least half the input range" in w for w in warnings)
    assert all("gradient masking" in w for w in warnings)


def test_fgsm_beating_pgd_and_robustness_rising_with_eps_are_flagged(
    model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    # A PGD that barely moves (tiny steps, no random start) loses to FGSM; eps 1.5 exceeds the range.
    options = EvaluationOptions(
        attacks=[FGSMSpec(eps=[0.3, 1.5]), PGDSpec(eps=[0.3], steps=1, step_size=1e-4, random_start=False)],
        max_samples=64,
    )
    warnings = evaluate(model, mnist_test, options).result.warnings
    assert any(w.startswith("fgsm beats pgd at linf eps=0.3") for w in warnings)
    assert any("larger than the input range span 1" in w for w in warnings)


def test_rising_robust_accuracy_is_flagged() -> None:
    from service.domain.results import AttackCost, AttackResult, Perturbation
    from workers.evaluation.sanity import eps_monotonicity

    def result(eps: float, accuracy: float) -> AttackResult:
        cost = AttackCost(forward_passes=0, backward_passes=0, forward_per_sample=0, backward_per_sample=0)
        return AttackResult(
            name="pgd", norm="linf", eps=eps, spec={}, robust_accuracy=accuracy, attack_success_rate=0,
            num_attacked=0, mean_perturbation=Perturbation(linf=0, l2=0), per_class_robust_accuracy={},
            seconds=0, samples_per_second=0, cost=cost,
        )  # fmt: skip

    assert eps_monotonicity([[result(0.1, 0.5), result(0.2, 0.505)]], num_samples=100) == []
    (warning,) = eps_monotonicity([[result(0.1, 0.5), result(0.2, 0.6)]], num_samples=100)
    assert "rises with eps, from 50.0% at eps=0.1 to 60.0% at eps=0.2" in warning


def test_shape_mismatch_is_one_sentence(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    data = small(mnist_test, x=np.zeros((64, 8, 8, 1), np.float32))
    with pytest.raises(
        EvaluationError, match=r"^the model takes inputs of shape \(28, 28, 1\) but the samples"
    ):
        evaluate(model, data, OPTIONS)


def test_flat_samples_are_reshaped_for_the_model(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    options = EvaluationOptions(attacks=[FGSMSpec(eps=0.1)], max_samples=64)
    flat = small(mnist_test, x=mnist_test.x[:64].reshape(64, 784))
    reshaped, original = evaluate(model, flat, options), evaluate(model, small(mnist_test), options)
    assert reshaped.result.clean_accuracy == original.result.clean_accuracy
    for key, values in original.per_sample.items():
        np.testing.assert_array_equal(reshaped.per_sample[key], values)


def test_flat_model_on_image_samples(mnist_test: ArrayDataset) -> None:
    import keras

    dense = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    options = EvaluationOptions(attacks=[PGDSpec(eps=0.1, steps=3)], max_samples=32)
    result = evaluate(from_keras(dense), mnist_test, options).result
    assert result.num_samples == 32 and result.attacks[0].robust_accuracy <= result.clean_accuracy


def test_labels_beyond_the_model_outputs(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    data = small(mnist_test, y=np.full(64, 12, np.int64))
    with pytest.raises(EvaluationError, match=r"labels range over \[12, 12\] but the model has 10 outputs"):
        evaluate(model, data, OPTIONS)


def test_data_outside_the_input_range(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    data = small(mnist_test, x=np.round(mnist_test.x[:64] * 255))
    message = (
        r"^x has values in \[0, 255\] outside input_range \[0, 1\]; set input_range to the model's input"
    )
    with pytest.raises(EvaluationError, match=message):
        evaluate(model, data, OPTIONS)


def test_should_stop_cancels_between_batches(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    options = EvaluationOptions(attacks=[PGDSpec(eps=0.1, steps=5)], max_samples=256, batch_size=32)
    with pytest.raises(EvaluationCancelled):
        evaluate(model, mnist_test, options, should_stop=should_stop)
    assert len(calls) == 4


def test_progress_is_monotonic_and_reaches_one(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    seen: list[Progress] = []
    options = EvaluationOptions(attacks=[FGSMSpec(eps=0.1), PGDSpec(eps=[0.1, 0.2], steps=5)], max_samples=96)
    evaluate(model, mnist_test, replace_batch(options, 32), progress=seen.append)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {p.stage for p in seen} >= {"clean", "fgsm eps=0.1", "pgd eps=0.1", "pgd eps=0.2"}
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in seen)


def replace_batch(options: EvaluationOptions, batch_size: int) -> EvaluationOptions:
    return options.model_copy(update={"batch_size": batch_size})


def test_same_seed_same_report(
    model: LoadedModel, mnist_test: ArrayDataset, outcome: EvaluationOutcome
) -> None:
    again = evaluate(model, mnist_test, OPTIONS)  # a warm model: the compiled graphs are reused
    for key, values in outcome.per_sample.items():
        np.testing.assert_array_equal(again.per_sample[key], values)


def test_targeted_attack_counts_hits_on_the_target(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    options = EvaluationOptions(
        attacks=[PGDSpec(eps=0.3, steps=20, targeted=True, target=3)], max_samples=100
    )
    per = evaluate(model, mnist_test, options).per_sample
    attacked = per["clean_correct"] & (per["labels"] != 3)
    np.testing.assert_array_equal(per["target_0"], np.full(100, 3))
    np.testing.assert_array_equal(per["fooled_0"], attacked & (per["adv_pred_0"] == 3))
    assert per["fooled_0"].sum() > attacked.sum() / 2
