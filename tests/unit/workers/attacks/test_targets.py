"""APGD-T and FAB-T, the top-k targeted sweeps, on a real trained CNN: strength against IBM ART, targets
tried on survivors only, and FAB's minimally distorted adversarials inside the eps ball."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import APGDTSpec, EvaluationOptions, FABTSpec
from tests.unit.workers.attacks import art_peer
from workers.attacks import APGDCE, APGDT, FABT
from workers.evaluation.engine import evaluate
from workers.models.loading import LoadedModel, from_keras

N = 200


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn)


@pytest.fixture(scope="module")
def samples(mnist_test: ArrayDataset) -> ArrayDataset:
    return mnist_test.take(N)


def robust(out: Any, y: np.ndarray, model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """Per sample: correct when clean and after the attack (the engine's count)."""
    clean = np.argmax(model.logits(x).numpy(), axis=1) == y
    return clean & (out.pred == y)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_apgd_t_is_at_least_as_strong_as_arts_targeted_apgd(
    mnist_cnn: Any, model: LoadedModel, samples: ArrayDataset
) -> None:
    x, y = samples.x, samples.y
    ours = robust(APGDT(steps=30, n_target_classes=3)(model, x, y, eps=0.1, seed=0), y, model, x).mean()
    theirs = art_peer.targeted_apgd_robust(mnist_cnn, x, y, eps=0.1, steps=30, targets=3).mean()
    assert ours <= theirs + 0.01, f"ours {ours:.3f} vs ART {theirs:.3f}"


def test_apgd_t_tries_each_target_on_the_survivors_of_the_previous(
    model: LoadedModel, samples: ArrayDataset
) -> None:
    x, y = samples.x[:100], samples.y[:100]
    runs = [APGDT(steps=10, n_target_classes=k)(model, x, y, eps=0.1, seed=1) for k in (1, 2, 3)]
    broken = [out.success for out in runs]
    # More targets never un-break a sample: the first target's run is the same in each.
    assert np.all(broken[0] <= broken[1]) and np.all(broken[1] <= broken[2])
    survivors = int((~broken[0]).sum())
    # The second target costs 10 gradient steps on each survivor of the first, and nothing on the others.
    assert runs[1].backward_passes - runs[0].backward_passes <= 10 * survivors
    assert runs[1].backward_passes > runs[0].backward_passes
    # Capped at the classes - 1 targets there are.
    capped = APGDT(steps=2, n_target_classes=50)(model, x[:8], y[:8], eps=0.1, seed=1)
    assert capped.backward_passes <= 8 * 2 * 9


def test_fab_t_finds_small_adversarials_inside_the_ball_and_agrees_with_apgd_t(
    model: LoadedModel, samples: ArrayDataset
) -> None:
    x, y = samples.x[:100], samples.y[:100]
    eps = 0.1
    fab = FABT(steps=30, n_target_classes=3)(model, x, y, eps=eps, seed=0)
    apgd = APGDT(steps=30, n_target_classes=3)(model, x, y, eps=eps, seed=0)
    fab_robust, apgd_robust = robust(fab, y, model, x).mean(), robust(apgd, y, model, x).mean()
    assert abs(fab_robust - apgd_robust) <= 0.05, f"FAB-T {fab_robust:.2f}, APGD-T {apgd_robust:.2f}"
    linf = np.abs((fab.x_adv - x).reshape(len(y), -1)).max(axis=1)
    assert linf.max() <= eps + 1e-6
    # A boundary attack walks towards the input: its adversarials sit well inside the ball, where
    # APGD's sit on its surface. (The median was 0.949 eps on one session's model, 2026-12-02: how far
    # inside depends on the model trained in the session, so the bound only says "not on the surface".)
    broken = fab.success & (np.argmax(model.logits(x).numpy(), axis=1) == y)
    assert broken.sum() >= 10 and np.median(linf[broken]) < 0.97 * eps


def test_fab_t_in_l2_is_about_as_strong_as_apgd_ce(model: LoadedModel, samples: ArrayDataset) -> None:
    x, y = samples.x[:100], samples.y[:100]
    fab = robust(FABT(steps=30, n_target_classes=3, norm="l2")(model, x, y, eps=1.0, seed=0), y, model, x)
    ce = robust(APGDCE(steps=30, norm="l2")(model, x, y, eps=1.0, seed=0), y, model, x)
    assert fab.mean() <= ce.mean() + 0.05


def test_the_sweeps_run_through_the_evaluation_engine(model: LoadedModel, samples: ArrayDataset) -> None:
    options = EvaluationOptions(
        attacks=[
            APGDTSpec(eps=0.1, steps=5, n_target_classes=2),
            FABTSpec(eps=0.1, steps=5, n_target_classes=2),
        ],
        max_samples=40,
        batch_size=20,
    )
    result = evaluate(model, samples, options).result
    assert [row.name for row in result.attacks] == ["apgd-t", "fab-t"]
    for row in result.attacks:
        assert 0.0 <= row.robust_accuracy < result.clean_accuracy
        assert row.cost.backward_passes <= row.num_attacked * 5 * 2


def test_apgd_t_runs_in_l1_through_the_norm_object(model: LoadedModel, samples: ArrayDataset) -> None:
    # The spec offers L-inf and L2; the worker's APGD-T takes any norm object, L1 included.
    x, y = samples.x[:30], samples.y[:30]
    out = APGDT(steps=20, n_target_classes=2, norm="l1")(model, x, y, eps=30.0, seed=0)
    assert np.abs((out.x_adv - x).reshape(30, -1)).sum(axis=1).max() <= 30.0 * (1 + 1e-5)
    assert robust(out, y, model, x).mean() < (np.argmax(model.logits(x).numpy(), axis=1) == y).mean()
