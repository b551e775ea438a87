"""Corruptions in an evaluation: per-item accuracy from per-sample correctness, seeded, with sentences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.corruptions import CORRUPTION_NAMES
from service.domain.datasets import ArrayDataset
from service.domain.limits import corruption_forward_passes
from service.domain.results import Progress
from service.domain.specs import CorruptionsSpec, EvaluationOptions, FGSMSpec
from workers.evaluation.engine import EvaluationError, evaluate
from workers.models.loading import LoadedModel, from_keras
from workers.natural.corruptions import corrupt
from workers.natural.runs import CorruptionRuns, corruptions_result, shard_span

N = 96
SPEC = CorruptionsSpec(names=["gaussian_noise", "impulse_noise", "contrast"], severities=[1, 3, 5])


def _options(corruptions: CorruptionsSpec | None = SPEC, seed: int = 0) -> EvaluationOptions:
    return EvaluationOptions(
        attacks=[FGSMSpec(eps=0.1)], max_samples=N, batch_size=40, seed=seed, corruptions=corruptions
    )


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn, sha256="f" * 64)


def test_items_are_the_accuracy_of_the_model_on_the_corrupted_samples(
    model: LoadedModel, mnist_test: ArrayDataset, mnist_cnn: Any
) -> None:
    updates: list[Progress] = []
    outcome = evaluate(model, mnist_test, _options(), progress=updates.append)
    result = outcome.result.corruptions
    assert result is not None
    assert [(i.name, i.severity) for i in result.items] == [
        (name, s) for name in ["gaussian_noise", "impulse_noise", "contrast"] for s in (1, 3, 5)
    ]
    per = outcome.per_sample
    assert per["corruption_correct"].shape == (9, N)
    assert list(per["corruption_items"])[:2] == ["gaussian_noise:1", "gaussian_noise:3"]
    # Recomputed outside the engine: the same corruption of the same samples, the model's own predict.
    x, y = np.asarray(mnist_test.x[:N], np.float32), np.asarray(mnist_test.y[:N])
    noisy = corrupt(x, "impulse_noise", 5, seed=0, low=0.0, high=1.0)
    expected = np.argmax(mnist_cnn.predict(noisy, verbose=0), axis=1) == y
    np.testing.assert_array_equal(per["corruption_correct"][5], expected)
    assert result.items[5].accuracy == pytest.approx(expected.mean())
    accuracies = [i.accuracy for i in result.items]
    assert result.mean_accuracy == pytest.approx(np.mean(accuracies))
    clean = outcome.result.clean_accuracy
    assert result.relative_error == pytest.approx((1 - np.mean(accuracies)) / (1 - clean))
    assert result.items[8].accuracy < clean  # contrast at 0.15 costs a CNN trained on full contrast
    # Cost: every sample under each item, one forward pass each, on top of what the attacks make.
    plain = evaluate(model, mnist_test, _options(None))
    assert outcome.result.cost is not None and plain.result.cost is not None
    assert outcome.result.cost.forward_passes - plain.result.cost.forward_passes == 9 * N
    assert corruption_forward_passes(SPEC, N) == 9 * N
    assert updates[-1].fraction == 1.0
    assert any(u.stage.startswith("contrast severity") for u in updates)


def test_same_seed_same_figures_other_seed_other_draws(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    spec = CorruptionsSpec(names=["impulse_noise"], severities=[5])
    a = evaluate(model, mnist_test, _options(spec, seed=4)).per_sample["corruption_correct"]
    b = evaluate(model, mnist_test, _options(spec, seed=4)).per_sample["corruption_correct"]
    c = evaluate(model, mnist_test, _options(spec, seed=5)).result.corruptions
    np.testing.assert_array_equal(a, b)
    assert c is not None and len(c.items) == 1


def test_all_skips_saturate_on_grayscale_and_naming_it_is_refused(
    model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    spec = CorruptionsSpec(names="all", severities=[1])
    result = evaluate(model, mnist_test, _options(spec)).result.corruptions
    assert result is not None
    assert [i.name for i in result.items] == [n for n in CORRUPTION_NAMES if n != "saturate"]
    assert result.skipped == ["saturate"]
    with pytest.raises(EvaluationError, match="saturate needs colour images"):
        evaluate(model, mnist_test, _options(CorruptionsSpec(names=["saturate"], severities=[1])))


def test_relative_error_is_null_without_clean_error() -> None:
    runs = CorruptionRuns([("contrast", 1), ("contrast", 5)], np.array([[1, 1], [1, 0]], bool), [],
                          range(0, 2), 4)  # fmt: skip
    perfect = corruptions_result(runs, clean_accuracy=1.0)
    assert perfect.mean_accuracy == 0.75 and perfect.relative_error is None
    assert corruptions_result(runs, clean_accuracy=0.5).relative_error == pytest.approx(0.5)


def test_shard_spans_cover_every_sample_once() -> None:
    # 70 correct of 100 samples in batches of 20: 4 batches, shards of 2; the last takes the tail.
    spans = [shard_span(0, 2, correct=70, batch_size=20, samples=100),
             shard_span(2, 4, correct=70, batch_size=20, samples=100)]  # fmt: skip
    assert spans == [range(0, 40), range(40, 100)]
    assert shard_span(0, 0, correct=0, batch_size=20, samples=10) == range(0, 10)


def test_corruptions_alone_make_an_evaluation_without_attacks(
    model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    spec = CorruptionsSpec(names=["contrast"], severities=[5])
    options = EvaluationOptions(max_samples=N, batch_size=40, corruptions=spec)
    outcome = evaluate(model, mnist_test, options)
    result = outcome.result
    assert result.attacks == [] and result.worst_case == [] and result.calibration is not None
    assert result.corruptions is not None and [(i.name, i.severity) for i in result.corruptions.items] == [
        ("contrast", 5)
    ]
    with_attack = evaluate(model, mnist_test, _options(spec))
    assert with_attack.result.corruptions == result.corruptions  # the attacks change no corruption figure
    np.testing.assert_array_equal(
        outcome.per_sample["corruption_correct"], with_attack.per_sample["corruption_correct"]
    )
