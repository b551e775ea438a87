"""APGD-CE and APGD-DLR on a real trained CNN: the schedule, strength against IBM ART, scale invariance."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import APGDCESpec, APGDDLRSpec, EvaluationOptions
from workers.attacks import APGDCE, APGDDLR, PGD, AttackNotApplicable, attack_from_spec
from workers.attacks.apgd import checkpoints
from workers.evaluation.engine import EvaluationError, evaluate
from workers.models.loading import LoadedModel, from_keras

N = 300


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn)


@pytest.fixture(scope="module")
def samples(mnist_test: ArrayDataset) -> ArrayDataset:
    return mnist_test.take(N)


def robust(out: Any, y: np.ndarray, model: LoadedModel, x: np.ndarray) -> float:
    """Robust accuracy as the engine counts it: a sample wrong when clean is not robust, whatever the attack
    did (a random start can land a misclassified sample back on its label)."""
    clean = np.argmax(model.logits(x).numpy(), axis=1) == y
    return float((clean & (out.pred == y)).mean())


def test_checkpoints_follow_the_papers_schedule() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then past 1), times 100 iterations.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9]
    assert checkpoints(1) == []


def art_apgd_ce(
    keras_model: Any, x: np.ndarray, y: np.ndarray, *, eps: float, steps: int, seed: int
) -> float:
    import tensorflow as tf

    with warnings.catch_warnings():
        # ART announces optional back ends it did not find when it is imported; nothing we use needs them.
        warnings.filterwarnings("ignore", message="PyTorch not found", category=UserWarning)
        from art.attacks.evasion import AutoProjectedGradientDescent
        from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=keras_model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    attack = AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps, nb_random_init=1, batch_size=N,
        loss_type="cross_entropy", verbose=False,
    )  # fmt: skip
    np.random.seed(seed)  # ART draws its random start from NumPy's global generator
    x_adv = attack.generate(x, y)
    return float((np.argmax(classifier.predict(x_adv, batch_size=N), axis=1) == y).mean())


@pytest.mark.slow
def test_apgd_ce_is_at_least_as_strong_as_arts(
    mnist_cnn: Any, model: LoadedModel, samples: ArrayDataset
) -> None:
    x, y = samples.x, samples.y
    ours = robust(APGDCE(steps=100)(model, x, y, eps=0.1, seed=0), y, model, x)
    theirs = art_apgd_ce(mnist_cnn, x, y, eps=0.1, steps=100, seed=0)
    assert ours <= theirs + 0.01, f"ours {ours:.3f} vs ART {theirs:.3f}"
    # And it beats PGD with the same number of gradients (or ties it).
    assert ours <= robust(PGD(steps=100)(model, x, y, eps=0.1, seed=0), y, model, x) + 0.01


@pytest.mark.slow
def test_apgd_dlr_breaks_logits_scaled_by_1000(mnist_cnn: Any, samples: ArrayDataset) -> None:
    import keras

    inputs = keras.Input((28, 28, 1))
    scaled = from_keras(keras.Model(inputs, keras.layers.Rescaling(1000.0)(mnist_cnn(inputs))))
    x, y = samples.x, samples.y
    pgd_ce = robust(PGD(steps=40)(scaled, x, y, eps=0.2, seed=0), y, scaled, x)
    margin = robust(PGD(steps=40, loss="cw")(scaled, x, y, eps=0.2, seed=0), y, scaled, x)
    dlr = robust(APGDDLR(steps=100)(scaled, x, y, eps=0.2, seed=0), y, scaled, x)
    assert pgd_ce > 0.5  # the saturated cross-entropy has no gradient: mostly "robust"
    assert dlr <= margin + 0.03 and dlr < 0.25, f"DLR {dlr:.3f}, margin {margin:.3f}, PGD-CE {pgd_ce:.3f}"


def test_best_point_is_kept_and_fooled_samples_stop_early(model: LoadedModel, samples: ArrayDataset) -> None:
    x, y = samples.x[:100], samples.y[:100]
    out = APGDCE(steps=20)(model, x, y, eps=0.1, seed=4)
    full = APGDCE(steps=20, early_stop=False)(model, x, y, eps=0.1, seed=4)
    assert (full.forward_passes, full.backward_passes) == (100 * 21, 100 * 20)
    np.testing.assert_array_equal(out.success, full.success)  # early exit changes the work, not the result
    assert out.backward_passes < full.backward_passes
    # A failed sample returns its highest-loss iterate, whose loss is at least the start point's.
    start = APGDCE(steps=1)(model, x, y, eps=0.1, seed=4)
    failed = ~full.success & ~start.success
    assert failed.any() and np.all(full.objective[failed] >= start.objective[failed] - 1e-4)


def test_dlr_needs_three_classes_and_says_so(samples: ArrayDataset) -> None:
    import keras

    binary = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model = from_keras(binary)
    with pytest.raises(AttackNotApplicable, match="at least 3 classes"):
        APGDDLR(steps=2)(model, samples.x[:4], np.zeros(4, np.int64), eps=0.1)
    two = ArrayDataset(samples.x[:8], samples.y[:8] % 2, "0" * 64, "two")
    options = EvaluationOptions(attacks=[APGDDLRSpec(eps=0.1, steps=2)])
    with pytest.raises(EvaluationError, match="at least 3 classes"):
        evaluate(model, two, options)


def test_apgd_ce_runs_through_the_evaluation_engine(model: LoadedModel, samples: ArrayDataset) -> None:
    options = EvaluationOptions(
        attacks=[APGDCESpec(eps=[0.05, 0.1], steps=10), APGDDLRSpec(eps=0.1, steps=10, norm="linf")],
        max_samples=64,
        batch_size=32,
    )
    result = evaluate(model, samples, options).result
    assert [(row.name, row.eps) for row in result.attacks] == [
        ("apgd-ce", 0.05),
        ("apgd-ce", 0.1),
        ("apgd-dlr", 0.1),
    ]
    for row in result.attacks:
        assert 0.0 <= row.robust_accuracy < result.clean_accuracy
        assert row.spec["steps"] == 10 and row.cost.backward_passes <= row.num_attacked * 10
    assert result.attacks[1].robust_accuracy <= result.attacks[0].robust_accuracy


def test_eot_averages_the_gradient_over_draws(model: LoadedModel, samples: ArrayDataset) -> None:
    x, y = samples.x[:50], samples.y[:50]
    one = APGDCE(steps=10, early_stop=False)(model, x, y, eps=0.1, seed=5)
    three = APGDCE(steps=10, early_stop=False, eot_iter=3)(model, x, y, eps=0.1, seed=5)
    assert three.backward_passes == 3 * one.backward_passes == 3 * 50 * 10
    # On a deterministic model every draw has the same gradient, so the attack does the same thing.
    np.testing.assert_array_equal(three.success, one.success)
    spec = APGDDLRSpec(eps=0.3, eot_iter=20)
    assert spec.label() == "apgd-dlr-100 eot20" and spec.gradient_steps() == 2000
    assert attack_from_spec(spec).gradient_steps == 2000


def test_eot_on_a_stochastic_model_draws_afresh_each_time(model: LoadedModel, samples: ArrayDataset) -> None:
    import tensorflow as tf

    inner = model.logits
    noisy = replace(model, logits=lambda x: inner(x + tf.random.normal(tf.shape(x), stddev=0.2)), cache={})
    x, y = samples.x[:50], samples.y[:50]
    averaged = APGDCE(steps=5, eot_iter=4, early_stop=False)
    out = averaged(noisy, x, y, eps=0.1, seed=0)
    assert out.backward_passes == 50 * 5 * 4
    # The draws of one step are separate calls of the model, not one call reused.
    graph = averaged.compiled(noisy, (0.0, 1.0)).graphs[1]
    ops = graph.get_concrete_function().graph.get_operations()
    assert sum(op.type == "RandomStandardNormal" for op in ops) >= 4
