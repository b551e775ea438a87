"""The autoattack ensemble on a real trained CNN: survivors only, the per-sample AND of its stages,
cumulative eps, its report row and per-sample stages, and the masked-logits model it exists for.

The versions are the small ones of the `small_autoattack` fixture (5-step APGD-CE and APGD-DLR): a
version is data, and these tests are about the ensemble, not about the strength of its stages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import APGDCESpec, APGDDLRSpec, AutoAttackSpec, EvaluationOptions, PGDSpec
from workers.attacks import attack_from_spec
from workers.evaluation.engine import evaluate
from workers.evaluation.ensemble import Ensemble, stage_seed
from workers.models.loading import LoadedModel, from_keras

N = 120


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn, sha256="e" * 64)


def test_each_stage_attacks_only_the_survivors_and_breaks_what_it_says(
    model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    x, y = mnist_test.x[:N], mnist_test.y[:N]
    stages = [APGDCESpec(eps=0.05, steps=5), APGDDLRSpec(eps=0.05, steps=5)]
    out = Ensemble(stages)(model, x, y, eps=0.05, seed=(3, 4))

    # The same stages by hand: the first on every sample, the second on what the first left.
    first = attack_from_spec(stages[0])(model, x, y, eps=0.05, seed=stage_seed((3, 4), 0, 0))
    broken_first = first.pred != y
    alive = np.flatnonzero(~broken_first)
    assert 0 < alive.size < N
    second = attack_from_spec(stages[1])(model, x[alive], y[alive], eps=0.05, seed=stage_seed((3, 4), 1, 0))
    broken_second = np.zeros(N, bool)
    broken_second[alive] = second.pred != y[alive]

    np.testing.assert_array_equal(out.broken_by, np.where(broken_first, 1, np.where(broken_second, 2, 0)))
    np.testing.assert_array_equal(out.success, broken_first | broken_second)  # robust = AND of the stages
    assert [s.attacked for s in out.stages] == [N, alive.size]
    assert [s.broken for s in out.stages] == [int(broken_first.sum()), int(broken_second.sum())]
    assert out.stages[1].backward == second.backward_passes <= alive.size * 5
    assert out.backward_passes == first.backward_passes + second.backward_passes
    # The inputs it returns are the adversarial ones: in the ball, and misclassified where it says so.
    assert np.abs(out.x_adv - x).max() <= 0.05 + 1e-6
    pred = np.argmax(model.logits(out.x_adv).numpy(), axis=1)
    np.testing.assert_array_equal(pred[out.success] != y[out.success], True)


def test_a_stage_with_restarts_runs_each_on_its_own_survivors(
    model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    x, y = mnist_test.x[:N], mnist_test.y[:N]
    out = Ensemble([APGDCESpec(eps=0.04, steps=3, restarts=3)])(model, x, y, eps=0.04, seed=1)
    single = attack_from_spec(APGDCESpec(eps=0.04, steps=3))
    alive, broken_last = np.arange(N), 0
    for restart in range(3):
        hit = single(model, x[alive], y[alive], eps=0.04, seed=stage_seed((1,), 0, restart)).pred != y[alive]
        alive, broken_last = alive[~hit], int(hit.sum())
    assert int((~out.success).sum()) == alive.size
    assert out.stages[0].last_restart_broken == broken_last


@pytest.fixture
def autoattack_outcome(small_autoattack: Any, model: LoadedModel, mnist_test: ArrayDataset) -> Any:
    options = EvaluationOptions(
        attacks=[AutoAttackSpec(eps=[0.03, 0.06], version="fast"), APGDCESpec(eps=0.06, steps=5)],
        max_samples=N,
        batch_size=50,
        seed=5,
    )
    return evaluate(model, mnist_test, options)


def test_its_row_gives_each_stage_and_larger_eps_attack_only_the_survivors(autoattack_outcome: Any) -> None:
    result, arrays = autoattack_outcome.result, autoattack_outcome.per_sample
    small, large = result.attacks[0], result.attacks[1]
    assert (small.name, small.cumulative, large.cumulative) == ("autoattack", False, True)
    for row in (small, large):
        assert row.stages is not None and [s.name for s in row.stages] == ["apgd-ce-5", "apgd-dlr-5"]
        after = [s.robust_accuracy for s in row.stages]
        assert after == sorted(after, reverse=True) and after[-1] == row.robust_accuracy
        assert row.stages[1].num_attacked == row.stages[0].num_attacked - row.stages[0].broken
        assert row.cost.backward_passes == sum(s.cost.backward_passes for s in row.stages)
        assert row.cost.queries == sum(s.cost.queries or 0 for s in row.stages)
    # At the larger eps only the samples that survived the smaller one are attacked.
    survivors = round(small.robust_accuracy * N)
    assert large.stages is not None and large.stages[0].num_attacked == survivors
    fooled_small, fooled_large = arrays["fooled_0"], arrays["fooled_1"]
    assert np.all(fooled_large[fooled_small])  # cumulative
    np.testing.assert_array_equal(arrays["stage_1"] == -1, fooled_small)
    np.testing.assert_array_equal(arrays["stage_1"] > 0, fooled_large & ~fooled_small)
    assert list(arrays["stage_names_1"]) == ["apgd-ce-5", "apgd-dlr-5"]
    assert "stage_2" not in arrays  # a plain attack has no stages


def test_the_worst_case_is_the_and_of_every_stage_and_attack(autoattack_outcome: Any) -> None:
    result, arrays = autoattack_outcome.result, autoattack_outcome.per_sample
    worst = next(w for w in result.worst_case if w.eps == 0.06)
    assert worst.attacks == ["autoattack", "apgd-ce"]
    stage = arrays["stage_1"]
    robust = arrays["clean_correct"] & (stage == 0) & ~arrays["fooled_2"]
    np.testing.assert_array_equal(arrays["worst_robust_linf_0.06"], robust)
    assert worst.robust_accuracy == pytest.approx(robust.mean())


def test_the_masked_logits_model_autoattack_breaks_it_and_says_why(
    monkeypatch: pytest.MonkeyPatch, mnist_cnn: Any, mnist_test: ArrayDataset
) -> None:
    import keras

    from service.domain import specs

    # A margin-loss stage twice as long as the margin-loss PGD it is compared with (APGD's first steps
    # are large and coarse); the test model's training is not bit-for-bit repeatable on a busy CPU.
    stages = ({"name": "apgd-ce", "steps": 5}, {"name": "apgd-dlr", "steps": 20})
    monkeypatch.setitem(specs.AUTOATTACK_STAGES, "fast", stages)

    # Logits scaled by 1000: the softmax saturates, so the cross-entropy has no gradient (issue 13).
    inputs = keras.Input((28, 28, 1))
    masked = from_keras(keras.Model(inputs, keras.layers.Rescaling(1000.0)(mnist_cnn(inputs))))
    options = EvaluationOptions(
        attacks=[
            PGDSpec(eps=0.2),  # PGD-40 with cross-entropy: the default sanity attack
            PGDSpec(eps=0.2, steps=10, loss="cw"),
            AutoAttackSpec(eps=0.2, version="fast"),
        ],
        max_samples=64,
        batch_size=64,
    )
    result = evaluate(masked, mnist_test, options).result
    pgd_ce, margin, auto = (row.robust_accuracy for row in result.attacks)
    assert pgd_ce > 0.6  # the masked gradient fools PGD-CE
    assert auto <= margin + 0.08 and auto < pgd_ce - 0.5
    worst = result.worst_case[0]
    assert worst.robust_accuracy <= auto
    assert any(
        w.startswith("pgd-40 (cross-entropy) alone gives") and "autoattack fast" in w for w in result.warnings
    )
    assert any("softmax of the model's outputs is saturated on" in w for w in result.warnings)


def test_a_random_model_is_flagged_with_the_version_to_use(
    model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    import dataclasses

    import tensorflow as tf

    def noisy(x: tf.Tensor) -> tf.Tensor:
        logits = model.logits(x)
        return logits + tf.random.normal(tf.shape(logits), stddev=0.5)

    random_model = dataclasses.replace(model, logits=noisy, cache={})
    options = EvaluationOptions(attacks=[PGDSpec(eps=0.1, steps=2)], max_samples=32)
    warnings = evaluate(random_model, mnist_test, options).result.warnings
    assert any(
        w.startswith("the model's outputs differ between two forward passes on 32 of 32 probe samples")
        and '"version": "rand"' in w
        for w in warnings
    )
    assert not any(
        "differ between two forward passes" in w for w in evaluate(model, mnist_test, options).result.warnings
    )


def test_shards_of_an_autoattack_evaluation_merge_into_the_whole_one(
    small_autoattack: Any, model: LoadedModel, mnist_test: ArrayDataset
) -> None:
    """What a sharded evaluation does with the engine (workers/sandbox/calls.py, workers/runners/sharded.py):
    attack ranges of global batches, save each run's arrays, merge them; the report is the whole one's."""
    from tests.unit.workers.evaluation.shard_helpers import merged_and_whole

    options = EvaluationOptions(
        attacks=[AutoAttackSpec(eps=[0.03, 0.06], version="standard"), PGDSpec(eps=0.06, steps=3)],
        max_samples=N, batch_size=25, seed=2,
    )  # fmt: skip
    spans = [range(0, 2), range(2, 3), range(3, 5)]
    (merged_body, merged_arrays), (whole_body, whole_arrays) = merged_and_whole(
        model, mnist_test, options, spans
    )
    assert merged_body == whole_body
    assert merged_body["attacks"][1]["cumulative"] and len(merged_body["attacks"][1]["stages"]) == 2
    assert merged_arrays.keys() == whole_arrays.keys()
    for name in whole_arrays:
        np.testing.assert_array_equal(merged_arrays[name], whole_arrays[name], err_msg=name)
