"""Minimum-norm attacks (cw, fmn) on a real trained CNN: true norms of adversarial points, the eps rows
derived from the per-sample norms, the minimum_norm entry and its curve, shards, and C&W against PGD-L2.

Budgets are small (tests are about the contract, bench/minnorm.py about strength): C&W with a learning
rate of 0.1 so a few hundred steps reach saturated MNIST pixels (tanh space moves them slowly), FMN with
100 steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import CWSpec, EvaluationOptions, FMNSpec, PGDSpec
from workers.attacks import CW, FMN, PGD
from workers.attacks.minimum_norm import MinimumNormOutput, distances
from workers.evaluation.engine import EvaluationOutcome, evaluate
from workers.models.loading import LoadedModel, from_keras

N = 48
# 6 searches x 100 steps from c = 1: a median within 10% of the default budget's on this CNN (measured).
SMALL_CW = {"binary_search_steps": 6, "steps": 100, "learning_rate": 0.1, "initial_const": 1.0}
# For the contract of the evaluation only.
TINY_CW = {"binary_search_steps": 3, "steps": 30, "learning_rate": 0.1, "initial_const": 1.0}


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn, sha256="c" * 64)


@pytest.fixture(scope="module")
def batch(mnist_test: ArrayDataset, model: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(mnist_test.x[:N], np.float32).reshape((N, *model.input_shape))
    y = np.asarray(mnist_test.y[:N], np.int64)
    correct = np.argmax(model.logits(x).numpy(), axis=1) == y
    return x[correct], y[correct]


@pytest.fixture(scope="module")
def cw_output(model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]) -> MinimumNormOutput:
    return CW(**SMALL_CW).minimize(model, *batch)


@pytest.mark.parametrize(
    "attack",
    [CW(**SMALL_CW), FMN(steps=100, norm="l2"), FMN(steps=100, norm="linf"), FMN(steps=100, norm="l1")],
    ids=["cw", "fmn-l2", "fmn-linf", "fmn-l1"],
)
def test_norms_are_the_true_norms_of_adversarial_points_in_range(
    attack: Any, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray], request: pytest.FixtureRequest
) -> None:
    x, y = batch
    out = request.getfixturevalue("cw_output") if attack.name == "cw" else attack.minimize(model, x, y)
    found = np.isfinite(out.norms)
    assert found.mean() > 0.8  # it does find adversarials
    np.testing.assert_allclose(out.norms[found], distances(out.x_adv, x, attack.norm.name)[found], rtol=1e-6)
    pred = np.argmax(model.logits(out.x_adv).numpy(), axis=1)
    assert (pred[found] != y[found]).all()  # each finite norm belongs to a misclassified point
    np.testing.assert_array_equal(out.success, found)
    np.testing.assert_array_equal(out.x_adv[~found], x[~found])  # none found: the input itself
    assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 1.0
    assert out.backward_passes <= attack.gradient_steps * x.shape[0]


def test_cw_median_is_below_pgd_l2_smallest_successful_eps(
    model: LoadedModel, batch: tuple[np.ndarray, np.ndarray], cw_output: MinimumNormOutput
) -> None:
    """The issue's check: per sample, the smallest eps of a grid at which PGD-L2 fools it; cw's median is
    below the median of those."""
    x, y = batch
    grid = [0.5 * k for k in range(1, 9)]
    smallest = np.full(y.shape, np.inf)
    pgd = PGD(norm="l2", steps=20)
    for eps in reversed(grid):
        fooled = pgd(model, x, y, eps=eps, seed=1).success
        smallest[fooled] = eps
    assert np.median(cw_output.norms) < np.median(smallest)


@pytest.fixture(scope="module")
def outcome(model: LoadedModel, mnist_test: ArrayDataset) -> EvaluationOutcome:
    options = EvaluationOptions(
        attacks=[
            PGDSpec(eps=[1.0, 2.0], norm="l2", steps=10),
            CWSpec(eps=[1.0, 2.0], **TINY_CW),
            FMNSpec(norm="l2", steps=60),
        ],
        max_samples=N, batch_size=20,
    )  # fmt: skip
    return evaluate(model, mnist_test, options, keep_examples=1)


def test_rows_exist_for_the_eps_given_and_agree_with_the_per_sample_norms(outcome: EvaluationOutcome) -> None:
    result, arrays = outcome.result, outcome.per_sample
    assert [(r.name, r.eps) for r in result.attacks] == [("pgd", 1.0), ("pgd", 2.0), ("cw", 1.0), ("cw", 2.0)]
    norms = arrays["minimum_norm_1"]
    correct = arrays["clean_correct"]
    assert (norms[~correct] == 0).all() and (norms[correct] > 0).all()
    for i, row in enumerate(result.attacks[2:], start=2):
        robust = correct & (norms > row.eps)
        assert row.robust_accuracy == pytest.approx(robust.mean())
        np.testing.assert_array_equal(arrays[f"fooled_{i}"], correct & (norms <= row.eps))
    assert "minimum_norm_2" in arrays and "minimum_norm_0" not in arrays
    # The worst case takes the minimum-norm rows like any other.
    worst = {(w.norm, w.eps): w for w in result.worst_case}
    assert "cw" in worst[("l2", 1.0)].attacks
    assert worst[("l2", 2.0)].robust_accuracy <= min(
        r.robust_accuracy for r in result.attacks if r.eps == 2.0
    )


def test_the_minimum_norm_entry_summarises_the_norms_and_its_curve_is_monotone(
    outcome: EvaluationOutcome,
) -> None:
    result, arrays = outcome.result, outcome.per_sample
    assert [(e.name, e.norm, e.attack) for e in result.minimum_norm] == [("cw", "l2", 1), ("fmn", "l2", 2)]
    for entry in result.minimum_norm:
        norms = arrays[f"minimum_norm_{entry.attack}"][arrays["clean_correct"]]
        ordered = np.sort(norms)
        assert entry.median == pytest.approx(ordered[(ordered.size - 1) // 2])
        assert entry.num_found == int(np.isfinite(norms).sum())
        eps = [p.eps for p in entry.curve]
        accuracy = [p.robust_accuracy for p in entry.curve]
        assert eps == sorted(eps) and eps[0] == 0.0
        assert all(a >= b for a, b in zip(accuracy, accuracy[1:], strict=False))
        assert accuracy[0] == pytest.approx(result.clean_accuracy)
        q = entry.quantiles
        assert q.p10 is not None and q.p90 is not None and q.p10 <= entry.median <= q.p90
        assert entry.cost.backward_passes > 0
    # The cw rows agree with its curve at their eps.
    cw_curve = {p.eps: p.robust_accuracy for p in result.minimum_norm[0].curve}
    for row in result.attacks[2:]:
        below = [acc for eps, acc in cw_curve.items() if eps <= row.eps]
        assert row.robust_accuracy == pytest.approx(below[-1])


def test_the_search_runs_once_and_is_counted_once(outcome: EvaluationOutcome) -> None:
    result = outcome.result
    assert result.cost is not None
    rows = result.attacks
    searches = sum(e.cost.forward_passes for e in result.minimum_norm)
    bounded = sum(r.cost.forward_passes for r in rows if r.name == "pgd")
    probes = result.cost.forward_passes - result.num_samples - searches - bounded
    assert 0 <= probes < 10 * result.num_samples  # the model probes only: the cw rows add nothing
    assert rows[2].cost == rows[3].cost == result.minimum_norm[0].cost
    assert outcome.examples is not None and "cw" in list(outcome.examples["attack"])


def test_shards_merge_norms_into_the_whole_evaluation(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    from tests.unit.workers.evaluation.shard_helpers import merged_and_whole

    options = EvaluationOptions(
        attacks=[FMNSpec(eps=[0.05, 0.1], norm="linf", steps=20), PGDSpec(eps=0.1, steps=3)],
        max_samples=N, batch_size=10,
    )  # fmt: skip
    spans = [range(0, 2), range(2, 5)]
    (merged_body, merged_arrays), (whole_body, whole_arrays) = merged_and_whole(
        model, mnist_test, options, spans
    )
    assert merged_body == whole_body and len(merged_body["minimum_norm"]) == 1
    for name in whole_arrays:
        np.testing.assert_array_equal(merged_arrays[name], whole_arrays[name], err_msg=name)
