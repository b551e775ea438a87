"""The contract every registered attack keeps, on a real trained CNN (no mocked TensorFlow).

Adding an attack means adding one entry to CONTRACT (its spec with few steps); the first test fails
until the service's spec union, the worker registry and this table agree.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from service.domain.datasets import ArrayDataset
from service.domain.specs import (
    ATTACK_NAMES,
    ATTACK_SPECS,
    ENSEMBLE_NAMES,
    QUERIES_PER_GRADIENT_STEP,
    APGDCESpec,
    APGDDLRSpec,
    APGDTSpec,
    AttackSpecBase,
    CWSpec,
    FABTSpec,
    FGSMSpec,
    FMNSpec,
    PGDSpec,
    SquareSpec,
)
from workers.attacks import ATTACKS, IterativeAttack, MinimumNormAttack, UnknownAttack, attack_from_spec
from workers.evaluation.ensemble import ENSEMBLES
from workers.models.loading import LoadedModel, from_keras

N = 100

# One entry per registered attack: a cheap spec of it (eps is replaced by each test).
CONTRACT: dict[str, AttackSpecBase] = {
    "fgsm": FGSMSpec(eps=0.1),
    "pgd": PGDSpec(eps=0.1, steps=12),
    "apgd-ce": APGDCESpec(eps=0.1, steps=12),
    "apgd-dlr": APGDDLRSpec(eps=0.1, steps=12),
    "apgd-t": APGDTSpec(eps=0.1, steps=12, n_target_classes=3),
    "fab-t": FABTSpec(eps=0.1, steps=12, n_target_classes=3),
    "square": SquareSpec(eps=0.1, n_queries=60),
    "cw": CWSpec(eps=0.1, binary_search_steps=3, steps=20, learning_rate=0.1),
    "fmn": FMNSpec(eps=0.1, steps=20),
}
NORMS = {"linf": [0.05, 0.1, 0.2], "l2": [0.5, 1.0, 2.0]}
# The norms an attack runs in, when not all of NORMS.
ONLY = {"cw": ("l2",)}
CASES = [pytest.param(name, norm, id=f"{name}-{norm}") for name in CONTRACT for norm in ONLY.get(name, NORMS)]


def spec_for(name: str, norm: str, **update: Any) -> AttackSpecBase:
    return type(CONTRACT[name]).model_validate({**CONTRACT[name].model_dump(), "norm": norm, **update})


def distance(x_adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    delta = (x_adv.astype(np.float64) - x).reshape(x.shape[0], -1)
    if norm == "linf":
        return np.abs(delta).max(axis=1)  # type: ignore[no-any-return]
    return np.sqrt(np.square(delta).sum(axis=1))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def batch(mnist_test: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    return mnist_test.x[:N], mnist_test.y[:N]


def counting(model: LoadedModel) -> tuple[LoadedModel, tf.Variable, tf.Variable]:
    """The model with two counters in its graph: samples through its forward pass and through its gradient.

    The gradient counter counts in the backward pass itself, so an attack that never differentiates the
    model leaves it at zero.
    """
    forward = tf.Variable(0, dtype=tf.int64, trainable=False)
    backward = tf.Variable(0, dtype=tf.int64, trainable=False)
    inner = model.logits

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def counted_input(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            with tf.control_dependencies([backward.assign_add(tf.cast(tf.shape(dy)[0], tf.int64))]):
                return tf.identity(dy)

        return tf.identity(x), grad

    def logits(x: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies([forward.assign_add(tf.cast(tf.shape(x)[0], tf.int64))]):
            return inner(counted_input(x))

    return replace(model, logits=logits, cache={}), forward, backward


def test_the_service_specs_the_worker_registry_and_this_table_agree() -> None:
    # Ensembles are attacks made of registered attacks; the engine runs them (workers/evaluation).
    assert set(ENSEMBLE_NAMES) == set(ENSEMBLES) and not set(ENSEMBLES) & set(ATTACKS)
    assert set(ATTACK_NAMES) == set(ATTACKS) | set(ENSEMBLES)
    assert set(ATTACKS) == set(CONTRACT)
    for name, cls in ATTACKS.items():
        assert cls.name == name and isinstance(CONTRACT[name], ATTACK_SPECS[name])
        assert type(attack_from_spec(CONTRACT[name])) is cls


def test_an_unknown_spec_is_refused_not_run_as_another_attack() -> None:
    class DeepFoolSpec(AttackSpecBase):
        name: str = "deepfool"

    with pytest.raises(UnknownAttack, match="deepfool"):
        attack_from_spec(DeepFoolSpec(eps=0.1))


@pytest.mark.parametrize("name,norm", CASES)
def test_stays_in_the_ball_and_range_attacks_is_deterministic_and_traces_once(
    name: str, norm: str, mnist_cnn: Any, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    # One test for these, so each attack's graphs are traced once for all of them (tracing is its cost).
    x, y = batch
    model = from_keras(mnist_cnn)
    clean = (np.argmax(model.logits(x).numpy(), axis=1) == y).mean()
    attack = attack_from_spec(spec_for(name, norm))
    # Every eps and every batch size (a single sample, a short batch, all N) through the same graphs.
    for n, eps in zip((1, 33, N), NORMS[norm], strict=True):
        xb, yb = x[:n], y[:n]
        out = attack(model, xb, yb, eps=eps, seed=(7, n))
        assert out.x_adv.dtype == np.float32 and out.x_adv.shape == xb.shape
        assert distance(out.x_adv, xb, norm).max() <= eps * (1 + 1e-5) + 1e-6
        assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 1.0
        np.testing.assert_array_equal(out.pred, np.argmax(model.logits(out.x_adv).numpy(), axis=1))
        np.testing.assert_array_equal(out.success, out.pred != yb)
    assert (out.pred == y).mean() < clean  # at the largest eps, on all N samples, it does attack
    if isinstance(attack, MinimumNormAttack):  # its unbounded entry point shares the search's graphs
        attack.minimize(model, x[:5], y[:5])
    compiled = attack.compiled(model, (0.0, 1.0))
    assert compiled.tracing_count() == len(compiled.graphs)  # each graph traced once
    fresh = attack_from_spec(spec_for(name, norm))
    again = fresh(from_keras(mnist_cnn), x, y, eps=NORMS[norm][-1], seed=(7, N))
    np.testing.assert_array_equal(again.x_adv, out.x_adv)
    np.testing.assert_array_equal(again.pred, out.pred)


@pytest.mark.parametrize("name,norm", CASES)
def test_reported_cost_is_the_passes_the_model_made(
    name: str, norm: str, mnist_cnn: Any, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    model, forward, backward = counting(from_keras(mnist_cnn))
    spec = spec_for(name, norm, restarts=2) if "restarts" in type(CONTRACT[name]).model_fields else None
    attack = attack_from_spec(spec or spec_for(name, norm))
    out = attack(model, x, y, eps=NORMS[norm][1], seed=3)
    assert (out.forward_passes, out.backward_passes) == (int(forward.numpy()), int(backward.numpy()))
    assert out.queries == out.forward_passes
    most_forward, most_backward = attack.max_passes()  # the planned work bounds it
    assert out.forward_passes <= N * most_forward and out.backward_passes <= N * most_backward
    assert out.forward_passes >= N  # every sample is scored at least once
    if isinstance(attack, IterativeAttack) and not attack.uses_gradient:
        assert out.backward_passes == 0
    else:
        # Restarts, target classes and early exit only ever drop samples: at least one scoring pass each.
        assert out.forward_passes - out.backward_passes >= N
    # The spec's estimate (the job-size cap) is the work in gradient steps, a forward pass alone counting
    # a third of one; scoring and ranking passes are not in it, hence the slack.
    work = out.backward_passes + (out.forward_passes - out.backward_passes) / QUERIES_PER_GRADIENT_STEP
    assert work <= 1.1 * N * (spec or spec_for(name, norm)).gradient_steps() + 2 * N
