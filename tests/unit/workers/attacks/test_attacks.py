"""The attack engine on a real trained CNN: budgets, strength, determinism, restarts, targets, outputs."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import FGSMSpec, PGDSpec
from workers.attacks import FGSM, PGD, attack_from_spec
from workers.models.loading import LoadedModel, from_keras

N = 200

# Adding an attack means adding its specs here.
SPECS = [
    pytest.param(FGSMSpec(eps=0.1), id="fgsm-linf"),
    pytest.param(FGSMSpec(eps=1.5, norm="l2"), id="fgsm-l2"),
    pytest.param(FGSMSpec(eps=0.2, targeted=True, target=3), id="fgsm-linf-targeted"),
    pytest.param(PGDSpec(eps=0.1, steps=10), id="pgd-linf-ce"),
    pytest.param(PGDSpec(eps=0.1, steps=10, loss="cw"), id="pgd-linf-cw"),
    pytest.param(PGDSpec(eps=1.5, norm="l2", steps=10), id="pgd-l2-ce"),
    pytest.param(PGDSpec(eps=1.5, norm="l2", steps=10, loss="cw", restarts=2), id="pgd-l2-cw-restarts"),
    pytest.param(PGDSpec(eps=0.2, steps=10, targeted=True), id="pgd-linf-targeted"),
]


def distances(x_adv: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    delta = (x_adv.astype(np.float64) - x).reshape(x.shape[0], -1)
    return {"linf": np.abs(delta).max(axis=1), "l2": np.sqrt(np.square(delta).sum(axis=1))}


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn)


@pytest.fixture(scope="module")
def batch(mnist_test: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    return mnist_test.x[:N], mnist_test.y[:N]


@pytest.fixture(scope="module")
def clean_pred(model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    pred: np.ndarray = np.argmax(model.logits(batch[0]).numpy(), axis=1)
    return pred


@pytest.mark.parametrize("spec", SPECS)
def test_every_example_is_within_eps_and_range(
    spec: FGSMSpec | PGDSpec, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray], clean_pred: np.ndarray
) -> None:
    x, y = batch
    attack = attack_from_spec(spec)
    eps = spec.eps_values()[0]
    out = attack(model, x, y, eps=eps, seed=0)
    assert out.x_adv.shape == x.shape and out.x_adv.dtype == np.float32
    assert distances(out.x_adv, x)[spec.norm].max() <= eps + 1e-5
    assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 1.0
    # The reported prediction is the model's prediction on the returned example.
    np.testing.assert_array_equal(out.pred, np.argmax(model.logits(out.x_adv).numpy(), axis=1))
    if spec.targeted:
        np.testing.assert_array_equal(out.success, out.pred == out.goal)
        assert not np.any(out.goal == y) or spec.target is not None
    else:
        np.testing.assert_array_equal(out.success, out.pred != y)
        assert (out.pred == y).mean() < (clean_pred == y).mean()  # it does attack


def test_input_range_0_255_is_respected(mnist_cnn: Any, batch: tuple[np.ndarray, np.ndarray]) -> None:
    import keras

    inputs = keras.Input((28, 28, 1))
    model = from_keras(keras.Model(inputs, mnist_cnn(keras.layers.Rescaling(1 / 255)(inputs))))
    x, y = batch[0] * 255.0, batch[1]
    for attack, eps in [
        (PGD(steps=10), 0.3 * 255),
        (PGD(steps=10, norm="l2"), 3.0 * 255),
        (FGSM(), 0.3 * 255),
    ]:
        out = attack(model, x, y, eps=eps, seed=0, input_range=(0.0, 255.0))
        assert distances(out.x_adv, x)[attack.norm.name].max() <= eps * (1 + 1e-5)
        assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 255.0
        assert (out.pred == y).mean() < 0.5


def test_pgd40_breaks_the_undefended_cnn(model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = batch
    out = PGD(steps=40)(model, x, y, eps=0.3, seed=0)
    assert (out.pred == y).mean() < 0.05


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.2), ("l2", 1.5)])
def test_pgd_is_at_least_as_strong_as_fgsm(
    norm: str, eps: float, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    fgsm = FGSM(norm=norm)(model, x, y, eps=eps, seed=0)
    pgd = PGD(norm=norm, steps=20)(model, x, y, eps=eps, seed=0)
    assert (pgd.pred == y).mean() <= (fgsm.pred == y).mean()


@pytest.mark.parametrize(
    "attack",
    [FGSM(), PGD(steps=5), PGD(steps=5, norm="l2", restarts=2)],
    ids=["fgsm", "pgd-linf", "pgd-l2-restarts"],  # stable ids: the xdist processes must collect the same
)
def test_eps_zero_returns_the_clean_inputs(
    attack: FGSM | PGD, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray], clean_pred: np.ndarray
) -> None:
    x, y = batch
    out = attack(model, x, y, eps=0.0, seed=0)
    np.testing.assert_array_equal(out.x_adv, x)
    np.testing.assert_array_equal(out.pred, clean_pred)


def test_more_restarts_never_save_a_sample(model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = batch
    one = PGD(steps=10, restarts=1)(model, x, y, eps=0.1, seed=5)
    three = PGD(steps=10, restarts=3)(model, x, y, eps=0.1, seed=5)
    assert np.all(three.success[one.success])  # restart 0 is the same run, so every success survives
    assert three.success.sum() >= one.success.sum()
    # Successes are dropped before the next restart (and between chunks of steps): each run of a sample
    # is at most 10 gradients plus exactly one scoring pass.
    assert one.forward_passes - one.backward_passes == N and one.backward_passes <= N * 10
    scored = three.forward_passes - three.backward_passes
    assert N < scored < 3 * N and three.backward_passes <= scored * 10


def test_same_seed_same_examples_other_seed_other_examples(
    model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch[0][:50], batch[1][:50]
    attack = PGD(steps=5, norm="l2")
    first = attack(model, x, y, eps=1.0, seed=(3, 1))
    again = PGD(steps=5, norm="l2")(model, x, y, eps=1.0, seed=(3, 1))
    other = attack(model, x, y, eps=1.0, seed=(4, 1))
    np.testing.assert_array_equal(first.x_adv, again.x_adv)
    assert not np.array_equal(first.x_adv, other.x_adv)


def test_graph_is_traced_once_for_any_eps_and_batch_size(
    model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    attack = PGD(steps=3, random_start=False)
    for size, eps in [(7, 0.1), (64, 0.2), (1, 0.05), (33, 0.3)]:
        attack(model, x[:size], y[:size], eps=eps, seed=size)
    compiled = attack.compiled(model, (0.0, 1.0))
    assert compiled.tracing_count() == len(compiled.graphs)  # each graph traced once


def test_chunks_and_early_stop_do_not_change_the_result(
    mnist_cnn: Any, batch: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.attacks import iterative

    x, y = batch[0][:100], batch[1][:100]
    full = PGD(steps=10, early_stop=False)(from_keras(mnist_cnn), x, y, eps=0.1, seed=2)
    assert (full.forward_passes, full.backward_passes) == (100 * 11, 100 * 10)
    monkeypatch.setattr(iterative, "CHUNK_STEPS", 4)
    checks: list[int] = []
    chunked_model = from_keras(mnist_cnn)  # a fresh cache: the graphs are built under the patched size
    attack = PGD(steps=10)
    early = attack(chunked_model, x, y, eps=0.1, seed=2, check=lambda: checks.append(1))
    assert len(attack.compiled(chunked_model, (0.0, 1.0)).graphs) == 4  # start, 2 steps, 4 steps, score
    assert len(checks) == 2  # between the chunks 4 + 4 + 2
    np.testing.assert_allclose(early.x_adv, full.x_adv, atol=1e-6)
    assert (early.pred == full.pred).mean() >= 0.98
    # Samples fooled in the first chunks skipped the rest: less work, counted exactly.
    assert early.success.any() and early.backward_passes < full.backward_passes
    assert early.forward_passes - early.backward_passes == 100  # one scoring pass each


def test_targeted_pgd_reaches_its_target(model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = batch
    out = PGD(steps=40, targeted=True)(model, x, y, eps=0.3, seed=0)
    assert np.all(out.goal != y)  # a seeded random class other than the label
    assert (out.pred == out.goal).mean() > 0.6  # most samples
    fixed = PGD(steps=40, targeted=True, target=7, loss="cw")(model, x, y, eps=0.3, seed=0)
    assert np.all(fixed.goal == 7) and (fixed.pred == 7).mean() > 0.6


def test_fgsm_cost_is_one_gradient_and_a_scoring_pass(
    model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    out = FGSM()(model, x, y, eps=0.1, seed=0)
    assert (out.forward_passes, out.backward_passes) == (2 * N, N)


def test_probabilities_model_is_attacked_through_log_probabilities(
    mnist_cnn: Any, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    from tests.modelzoo import with_softmax_head

    probs = from_keras(with_softmax_head(mnist_cnn), output="probabilities")
    x, y = batch
    pgd = PGD(steps=40)(probs, x, y, eps=0.3, seed=0)
    assert (pgd.pred == y).mean() < 0.05
    # log-softmax leaves the cross-entropy gradient unchanged, so FGSM agrees with the logits model.
    on_probs = FGSM()(probs, x, y, eps=0.1, seed=0)
    on_logits = FGSM()(model, x, y, eps=0.1, seed=0)
    assert abs((on_probs.pred == y).mean() - (on_logits.pred == y).mean()) <= 0.02


def test_the_last_restart_counts_the_samples_only_it_broke(
    model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    last = 0
    # A one-step budget from a random start, so that later restarts still find new adversarials; three
    # eps, because how many samples are left for the third restart depends on the session's model.
    for eps, seed in itertools.product((0.05, 0.1, 0.2), range(4)):
        runs = {r: PGD(steps=1, restarts=r)(model, x, y, eps=eps, seed=seed) for r in (1, 2, 3)}
        assert runs[1].last_restart_broken == 0  # one run has no "last of several"
        # Restart k's seed does not depend on how many follow, so restart k adds exactly its own breaks.
        for r in (2, 3):
            before, after = int(runs[r - 1].success.sum()), int(runs[r].success.sum())
            assert runs[r].last_restart_broken == after - before
        last += runs[3].last_restart_broken
    assert last > 0  # the check above was not vacuous
