"""Robust accuracy of a model on a dataset under every attack at every eps, with sanity checks.

The clean pass comes first; attacks then run only on the samples classified correctly when clean, since
a misclassified sample counts as a failure whatever the attack does (AutoAttack drops them the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.domain.datasets import UNLABELLED, ArrayDataset, in_input_range, range_warning
from service.domain.results import EvaluationResult, Progress
from service.domain.specs import AttackSpecBase, EvaluationOptions
from workers.attacks import Attack, MinimumNormAttack, attack_from_spec
from workers.attacks.losses import cross_entropy
from workers.evaluation import diagnostics, minimum_norm, probes, sanity
from workers.evaluation.calibration import calibration
from workers.evaluation.ensemble import ENSEMBLES, Ensemble, EnsembleOutput
from workers.evaluation.examples import ExampleKeeper
from workers.evaluation.ood import OODScoreError, ood_results
from workers.evaluation.robustness import AttackRun, StageWork, attack_result, cost, per_class, worst_case
from workers.evaluation.scores import MSP, SCORE_COLUMNS, scores_of
from workers.models.loading import LoadedModel
from workers.natural import runs as corruption_runs
from workers.natural.runs import CorruptionRuns, CorruptionSetupError

# What the engine runs for one attack spec: a registered attack, or an ensemble of them.
Runner = Attack | Ensemble

# Seed path of the one-sample warm-up run, apart from every batch index.
_WARM_UP = 2**32 - 1
# Data a hair outside the range (float rounding of a rescale) is clipped rather than refused.
_RANGE_TOLERANCE = 1e-6


class EvaluationError(ValueError):
    """The model, the data and the options do not fit together; the message is one sentence."""


class EvaluationCancelled(Exception):
    """`should_stop()` returned True between two batches."""


@dataclass
class EvaluationOutcome:
    """The report plus the per-sample arrays behind it (labels, predictions, who was fooled, distances)."""

    result: EvaluationResult
    per_sample: dict[str, np.ndarray]
    # The arrays of `adversarial_examples.npz` (workers/evaluation/examples.py), when asked for with
    # keep_examples.
    examples: dict[str, np.ndarray] | None = None

    def save_per_sample(self, path: str | Path) -> None:
        np.savez_compressed(path, **self.per_sample)  # type: ignore[arg-type]


class _Tracker:
    """Progress over the expected gradient work, and the cancellation check between batches."""

    def __init__(
        self, progress: Callable[[Progress], None] | None, should_stop: Callable[[], bool] | None
    ) -> None:
        self.progress, self.should_stop = progress, should_stop
        self.total, self.done, self.start = 1.0, 0.0, time.perf_counter()

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise EvaluationCancelled("the evaluation was cancelled")

    def advance(self, units: float, stage: str) -> None:
        self.done = min(self.done + units, self.total)
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.start
        fraction = self.done / self.total if self.total > 0 else 1.0
        eta = elapsed * (self.total - self.done) / self.done if self.done > 0 else None
        self.progress(Progress(fraction=min(max(fraction, 0.0), 1.0), stage=stage, eta_seconds=eta))


def evaluate(
    model: LoadedModel,
    dataset: ArrayDataset,
    options: EvaluationOptions,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep_examples: int = 0,
    ood_dataset: ArrayDataset | None = None,
) -> EvaluationOutcome:
    """Evaluate `model` on `dataset` under every attack of `options` at each of its eps values.

    With `keep_examples` > 0, that many samples per class (at most 20 in all) keep their adversarial
    inputs, returned as `outcome.examples` for the report page's example grid.

    Timing: when an attack's graph is not yet compiled for this model, it is traced and run once on a
    single sample before the clock starts; that warm-up is left out of the attack's `seconds`,
    `samples_per_second` and `cost`, but counted in the result's total `seconds`. `samples_per_second`
    is all evaluated samples over the attack's seconds (the clean-misclassified ones are free).

    Cost: the passes the engine really made. The clean pass is one forward and one backward (the gradient
    check) per sample. An attacked sample costs its gradient steps (FGSM 1; PGD at most steps per
    restart, fewer when it is fooled early or before a restart) plus one scoring forward per run. An eps
    of 0 costs nothing: the clean predictions are the answer.

    OOD (`options.ood`, with its samples as `ood_dataset`): one forward pass per OOD sample scores it, and
    the clean pass scores the evaluation's own samples.

    Per-sample arrays: labels, clean_pred, clean_correct, clean_scores (N, 3: msp, max_logit, energy),
    ood_scores (M, 3) with OOD; for the i-th (attack, eps) result adv_pred_i, fooled_i, linf_i, l2_i (and
    target_i when targeted); worst_robust_<norm>_<eps> per worst case; with corruptions,
    corruption_correct (items x samples) and corruption_items (`name:severity`).

    Corruptions: after the attacks, every sample (clean-wrong ones too) under each corruption at each
    severity, one forward pass each, counted in `cost`.

    Raises:
        EvaluationError: the data does not fit the model or the input range.
        EvaluationCancelled: `should_stop()` returned True.
    """
    started = time.perf_counter()
    tracker = _Tracker(progress, should_stop)
    x, y, warnings = _prepare(model, dataset, options)
    x_ood = prepare_ood(model, ood_dataset, options)
    n = x.shape[0]
    units = units_per_sample(options)
    extra = 0 if x_ood is None else x_ood.shape[0]
    images = corruption_images(model, dataset, x, options)
    corrupt_units = corruption_runs.corruption_units(options.corruptions, n)
    tracker.total = n + extra + n * units + corrupt_units

    clean_pred, zero_grad, bad_grad, clean_scores = _clean_pass(model, x, y, options.batch_size, tracker)
    ood_scores = None if x_ood is None else score_pass(model, x_ood, options.batch_size, tracker)
    clean_correct = clean_pred == y
    keeper = (
        ExampleKeeper.for_samples(y, clean_pred, keep_examples, x.shape[1:]) if keep_examples > 0 else None
    )
    tracker.total = n + extra + int(clean_correct.sum()) * units + corrupt_units
    runs = attack_runs(model, x, y, clean_pred, options, tracker, keeper=keeper)
    corrupted = None
    if images is not None:
        corrupted = run_corruptions(model, images, y, options, tracker)
    outcome = summarize(
        runs, y, clean_pred, zero_grad, bad_grad, options, warnings=warnings, num_classes=model.num_classes,
        model_sha256=model.sha256, dataset_sha256=dataset.sha256, seconds=time.perf_counter() - started,
        clean_scores=clean_scores, ood_scores=ood_scores,
        ood_dataset_sha256=None if ood_dataset is None else ood_dataset.sha256,
        corruptions=corrupted,
    )  # fmt: skip
    if keeper is not None:
        accuracies = _run_accuracies(runs, outcome.result)
        outcome.examples = keeper.arrays(x, y, clean_pred, runs, accuracies, input_range=options.input_range)
    tracker.done = tracker.total
    tracker.advance(0.0, "done")
    return outcome


def _run_accuracies(runs: list[AttackRun], result: EvaluationResult) -> list[float]:
    """Robust accuracy of each run (a minimum-norm run's: at no bound, the samples none was found for)."""
    rows = iter(result.attacks)
    accuracies = []
    for run in runs:
        if run.norms is None:
            accuracies.append(next(rows).robust_accuracy)
            continue
        for _ in run.spec.eps_values():
            next(rows)
        accuracies.append(float(np.isinf(run.norms).mean()))
    return accuracies


def attack_runs(
    model: LoadedModel,
    x: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    options: EvaluationOptions,
    tracker: _Tracker,
    *,
    batches: range | None = None,
    keeper: ExampleKeeper | None = None,
) -> list[AttackRun]:
    """Every attack at every eps, in the report's order; with `batches`, only those global batch indices.

    A minimum-norm attack makes one run (eps inf, with per-sample `norms`) whatever its eps values;
    `summarize` derives its rows.

    A shard (workers/runners/sharded.py) passes its batch range: the seeds come from the global batch
    index, so the shards of an evaluation together compute exactly what one worker computes.
    """
    clean_correct = clean_pred == y
    runs: list[AttackRun] = []
    for index, spec in enumerate(options.attacks):
        attack = runner_for(spec)
        if isinstance(attack, MinimumNormAttack):  # one search answers every eps
            units = attack.gradient_steps

            def advance(samples: float, stage: str = spec.name, units: float = units) -> None:
                tracker.advance(units * samples, stage)

            run = minimum_norm.run_minimum_norm(
                model, attack, spec, x, y, clean_pred, options, index=index, check=tracker.check,
                advance=advance, batches=batches, keeper=keeper,
            )  # fmt: skip
            runs.append(run)
            continue
        goal = attack.goals(y, model.num_classes, (options.seed, index))
        previous: AttackRun | None = None
        for eps_index, eps in enumerate(spec.eps_values()):
            # An ensemble's eps list ascends (its spec checks): each eps attacks the previous one's survivors.
            carried = previous if isinstance(attack, Ensemble) else None
            previous = _run_attack(
                model, attack, spec, x, y, goal, clean_correct, clean_pred, options,
                index=index, eps=eps, seed=(options.seed, index, eps_index), tracker=tracker,
                batches=batches, keeper=keeper, carried=carried,
            )  # fmt: skip
            runs.append(previous)
    return runs


def corruption_images(
    model: LoadedModel, dataset: ArrayDataset, x: np.ndarray, options: EvaluationOptions
) -> np.ndarray | None:
    """The samples as NHWC images for the corruptions (None when none are asked); raises EvaluationError.

    The model's input shape decides when it is an image; else the dataset's sample shape does (a model
    fed flat vectors of 28x28 digits gets its digits corrupted as images).
    """
    if options.corruptions is None:
        return None
    shapes = [tuple(model.input_shape), tuple(dataset.x.shape[1:])]
    shape = next(
        (s for s in shapes if len(s) in (2, 3) and int(np.prod(s)) == int(np.prod(x.shape[1:]))), None
    )
    try:
        hwc = corruption_runs.image_shape(shape if shape is not None else tuple(x.shape[1:]))
        corruption_runs.plan_items(options.corruptions, hwc[-1])  # refuse saturate on grey before attacking
    except CorruptionSetupError as exc:
        raise EvaluationError(str(exc)) from None
    return x.reshape((x.shape[0], *hwc))


def run_corruptions(
    model: LoadedModel,
    images: np.ndarray,
    y: np.ndarray,
    options: EvaluationOptions,
    tracker: _Tracker,
    *,
    span: range | None = None,
) -> CorruptionRuns:
    """Accuracy under each corruption (workers/natural/runs.py), with this evaluation's progress."""
    try:
        return corruption_runs.run_corruptions(
            model, images, y, options, check=tracker.check, advance=tracker.advance, span=span
        )
    except CorruptionSetupError as exc:
        raise EvaluationError(str(exc)) from None


def runner_for(spec: AttackSpecBase) -> Runner:
    """The attack or the ensemble a validated spec describes."""
    ensemble = ENSEMBLES.get(spec.name)
    return ensemble(spec) if ensemble is not None else attack_from_spec(spec)


def units_per_sample(options: EvaluationOptions) -> float:
    """Progress units of one attacked sample: the most passes every attack at every eps can make."""
    return float(
        sum(
            runner.gradient_steps * runner.restarts * (1 if spec.minimum_norm else len(spec.eps_values()))
            for spec in options.attacks
            for runner in [runner_for(spec)]
        )
    )


def summarize(
    runs: list[AttackRun],
    y: np.ndarray,
    clean_pred: np.ndarray,
    zero_grad: np.ndarray,
    bad_grad: np.ndarray,
    options: EvaluationOptions,
    *,
    warnings: list[str],
    num_classes: int,
    model_sha256: str,
    dataset_sha256: str,
    seconds: float,
    clean_scores: np.ndarray | None = None,
    ood_scores: np.ndarray | None = None,
    ood_dataset_sha256: str | None = None,
    corruptions: CorruptionRuns | None = None,
) -> EvaluationOutcome:
    """The report and the per-sample arrays from the clean pass, the attack runs and the corruptions
    (see `evaluate`).

    Calibration needs `clean_scores`; OOD figures need `ood_scores` too (and `options.ood`)."""
    n = y.shape[0]
    lo, hi = options.input_range
    clean_correct = clean_pred == y
    warnings = [*warnings, *sanity.gradient_health(zero_grad, bad_grad)]
    searches = [run for run in runs if run.norms is not None]
    work = [run for run in runs if run.norms is None] + searches  # each pass once
    runs, _ = minimum_norm.split_runs(runs, clean_pred)
    for run in runs:
        warnings += sanity.eps_beyond_range(run.spec.name, run.spec.norm, run.eps, hi - lo)
    results = [attack_result(run, y, clean_correct, num_classes) for run in runs]
    worst, worst_arrays = worst_case(runs, y, clean_correct, num_classes)
    groups = [
        [r for run, r in zip(runs, results, strict=True) if run.index == i]
        for i in range(len(options.attacks))
    ]
    warnings += sanity.eps_monotonicity(groups, n)
    warnings += sanity.single_step_beats_iterative(results, n)
    warnings += sanity.large_eps_not_reached(worst, hi - lo)
    warnings += diagnostics.masking_warnings(runs, results, clean_correct)
    warnings += diagnostics.bounded_beats_minimum_norm(runs, searches, clean_correct)

    # The clean pass: one forward and one backward each; the model probes: a few forward passes.
    forward = n + probes.probe_passes(n) + sum(run.forward for run in work)
    forward += 0 if ood_scores is None else ood_scores.shape[0]
    forward += 0 if corruptions is None else corruptions.forward
    ood = None
    if options.ood is not None and clean_scores is not None and ood_scores is not None:
        columns = [SCORE_COLUMNS.index(name) for name in options.ood.scores]
        try:
            ood = ood_results(options.ood.scores, clean_scores[:, columns], ood_scores[:, columns])
        except OODScoreError as exc:
            raise EvaluationError(str(exc)) from exc
    backward = n + sum(run.backward for run in work)
    result = EvaluationResult(
        num_samples=n,
        clean_accuracy=float(clean_correct.mean()),
        per_class_clean_accuracy=per_class(clean_correct, y, num_classes),
        attacks=results,
        worst_case=worst,
        minimum_norm=[minimum_norm.summary(run, clean_correct) for run in searches],
        warnings=warnings,
        cost=cost(forward, backward, n),
        calibration=None if clean_scores is None else calibration(clean_scores[:, MSP], clean_correct),
        ood=ood,
        model_sha256=model_sha256,
        dataset_sha256=dataset_sha256,
        ood_dataset_sha256=ood_dataset_sha256,
        seed=options.seed,
        input_range=(lo, hi),
        seconds=seconds,
        versions=_versions(),
        corruptions=(
            None
            if corruptions is None
            else corruption_runs.corruptions_result(corruptions, float(clean_correct.mean()))
        ),
    )
    per_sample: dict[str, np.ndarray] = {
        "labels": y,
        "clean_pred": clean_pred,
        "clean_correct": clean_correct,
    }
    if clean_scores is not None:
        per_sample["clean_scores"] = clean_scores
    if ood_scores is not None:
        per_sample["ood_scores"] = ood_scores
    for i, run in enumerate(runs):
        per_sample[f"adv_pred_{i}"] = run.adv_pred
        per_sample[f"fooled_{i}"] = run.fooled
        per_sample[f"linf_{i}"] = run.linf
        per_sample[f"l2_{i}"] = run.l2
        if run.spec.targeted:
            per_sample[f"target_{i}"] = run.goal
        if run.broken_by is not None:
            stages = results[i].stages or []
            per_sample[f"stage_{i}"] = run.broken_by
            per_sample[f"stage_names_{i}"] = np.array([s.name for s in stages], dtype=np.str_)
    for run in searches:
        assert run.norms is not None
        per_sample[f"minimum_norm_{run.index}"] = run.norms
    per_sample.update(worst_arrays)
    if corruptions is not None:
        per_sample.update(corruption_runs.per_sample_arrays(corruptions))
    return EvaluationOutcome(result, per_sample)


def _prepare(
    model: LoadedModel, dataset: ArrayDataset, options: EvaluationOptions
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The samples to evaluate, shaped for the model and checked against it; raises EvaluationError."""
    data = in_input_range(dataset.take(options.max_samples), options.input_range)
    if data.num_samples == 0:
        raise EvaluationError("the dataset has no samples to evaluate")
    x = np.asarray(data.x, dtype=np.float32)
    y = np.asarray(data.y, dtype=np.int64)
    x = _fit_shape(x, model.input_shape)
    if data.num_classes == 0:
        raise EvaluationError(f"the dataset {UNLABELLED}")
    if y.min() < 0 or y.max() >= model.num_classes:
        raise EvaluationError(
            f"the labels range over [{y.min()}, {y.max()}] but the model has {model.num_classes} outputs "
            f"(classes 0 to {model.num_classes - 1})"
        )
    for spec in options.attacks:
        problem = runner_for(spec).unsupported(model.num_classes)
        if problem is not None:
            raise EvaluationError(problem)
        if spec.target is not None and spec.target >= model.num_classes:
            raise EvaluationError(
                f"target class {spec.target} of {spec.name} does not exist: the model has "
                f"{model.num_classes} classes"
            )
    x_min, x_max = _check_values(x, options.input_range, "x")
    warning = range_warning(x_min, x_max, options.input_range)
    x = np.clip(x, *options.input_range)
    return x, y, ([] if warning is None else [warning]) + probes.model_warnings(model, x, options)


def prepare_ood(
    model: LoadedModel, dataset: ArrayDataset | None, options: EvaluationOptions
) -> np.ndarray | None:
    """The OOD samples as the evaluation's own: the same max_samples, input range and shape checks."""
    if options.ood is None:
        return None
    if dataset is None:
        raise EvaluationError("the evaluation asks for ood but no OOD dataset was given")
    data = in_input_range(dataset.take(options.max_samples), options.input_range)
    x = np.asarray(data.x, dtype=np.float32)
    try:
        x = _fit_shape(x, model.input_shape)
    except EvaluationError as exc:
        raise EvaluationError(f"the OOD dataset does not fit the model: {exc}") from None
    _check_values(x, options.input_range, "the OOD dataset's x")
    return np.clip(x, *options.input_range)


def _check_values(x: np.ndarray, input_range: tuple[float, float], what: str) -> tuple[float, float]:
    """x's smallest and largest values, or EvaluationError when they are not finite or not in range."""
    lo, hi = input_range
    tolerance = _RANGE_TOLERANCE * (hi - lo)
    x_min, x_max = float(x.min()), float(x.max())
    if not (np.isfinite(x_min) and np.isfinite(x_max)):
        raise EvaluationError(f"{what} holds NaN or infinite values; every sample must be finite")
    if x_min < lo - tolerance or x_max > hi + tolerance:
        raise EvaluationError(
            f"{what} has values in [{x_min:g}, {x_max:g}] outside input_range [{lo:g}, {hi:g}]; "
            "set input_range to the model's input range"
        )
    return x_min, x_max


def _fit_shape(x: np.ndarray, model_shape: tuple[int, ...]) -> np.ndarray:
    """`x` in the model's input shape: as is, reshaped when the element counts agree, or an error."""
    sample_shape = x.shape[1:]
    known = all(d is not None and d > 0 for d in model_shape)
    if len(sample_shape) == len(model_shape) and all(
        d is None or d <= 0 or d == s for d, s in zip(model_shape, sample_shape, strict=True)
    ):
        return x
    if known and int(np.prod(model_shape)) == int(np.prod(sample_shape)):
        return x.reshape((x.shape[0], *model_shape))
    raise EvaluationError(
        f"the model takes inputs of shape {tuple(model_shape)} "
        f"but the samples have shape {tuple(sample_shape)}"
    )


def _clean_function(model: LoadedModel) -> Callable[..., Any]:
    """Predictions plus per-sample flags for a zero or non-finite cross-entropy input gradient."""
    key = ("clean",)
    if key in model.cache:
        return model.cache[key]  # type: ignore[no-any-return]
    signature = [tf.TensorSpec((None, *model.input_shape), tf.float32), tf.TensorSpec((None,), tf.int64)]

    def graph(x: tf.Tensor, y: tf.Tensor) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = tf.cast(model.logits(x), tf.float32)
            loss = tf.reduce_sum(cross_entropy(z, y))
        grad = tape.gradient(loss, x)
        if grad is None:
            grad = tf.zeros_like(x)
        flat = tf.reshape(grad, [tf.shape(x)[0], -1])
        zero = tf.reduce_all(tf.equal(flat, 0.0), axis=1)
        nonfinite = tf.logical_not(tf.reduce_all(tf.math.is_finite(flat), axis=1))
        return tf.argmax(z, axis=-1, output_type=tf.int64), zero, nonfinite, scores_of(z)

    run: Callable[..., Any] = tf.function(graph, input_signature=signature, autograph=False)
    model.cache[key] = run
    return run


def _clean_pass(
    model: LoadedModel, x: np.ndarray, y: np.ndarray, batch_size: int, tracker: _Tracker
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predictions, zero- and bad-gradient flags, and the (N, 3) scores of `scores.SCORE_COLUMNS`."""
    run = _clean_function(model)
    preds, zeros, bads, scores = [], [], [], []
    for start in range(0, x.shape[0], batch_size):
        tracker.check()
        pred, zero, bad, score = run(x[start : start + batch_size], y[start : start + batch_size])
        preds.append(pred.numpy())
        zeros.append(zero.numpy())
        bads.append(bad.numpy())
        scores.append(score.numpy())
        tracker.advance(min(batch_size, x.shape[0] - start), "clean")
    return np.concatenate(preds), np.concatenate(zeros), np.concatenate(bads), np.concatenate(scores)


def score_pass(model: LoadedModel, x: np.ndarray, batch_size: int, tracker: _Tracker) -> np.ndarray:
    """The (N, 3) scores of samples that have no labels (the OOD set): one forward pass each."""
    key = ("scores",)
    if key not in model.cache:
        signature = [tf.TensorSpec((None, *model.input_shape), tf.float32)]
        model.cache[key] = tf.function(
            lambda x: scores_of(model.logits(x)), input_signature=signature, autograph=False
        )
    run = model.cache[key]
    scores = []
    for start in range(0, x.shape[0], batch_size):
        tracker.check()
        scores.append(run(x[start : start + batch_size]).numpy())
        tracker.advance(min(batch_size, x.shape[0] - start), "ood scores")
    return np.concatenate(scores)


def _run_attack(
    model: LoadedModel,
    attack: Runner,
    spec: AttackSpecBase,
    x: np.ndarray,
    y: np.ndarray,
    goal: np.ndarray,
    clean_correct: np.ndarray,
    clean_pred: np.ndarray,
    options: EvaluationOptions,
    *,
    index: int,
    eps: float,
    seed: tuple[int, ...],
    tracker: _Tracker,
    batches: range | None = None,
    keeper: ExampleKeeper | None = None,
    carried: AttackRun | None = None,
) -> AttackRun:
    """One attack at one eps over the clean-correct samples, batch by batch (only `batches` when given).

    With `carried` (an ensemble's run at its previous, smaller eps) the samples broken there count as
    broken here and only the others are attacked; the batches stay those of the clean-correct samples,
    so a shard computes the same as the whole evaluation.
    """
    if keeper is not None:
        keeper.start(x)  # samples never attacked keep their clean input
    n = x.shape[0]
    stage = f"{spec.name} eps={eps:g}"
    # A targeted attack whose target is the label itself has nothing to do.
    attacked = clean_correct & (goal != y) if spec.targeted else clean_correct.copy()
    adv_pred, fooled = clean_pred.copy(), np.zeros(n, bool)
    linf, l2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    ensemble = isinstance(attack, Ensemble)
    stages = [StageWork() for _ in attack.attacks] if isinstance(attack, Ensemble) else None
    broken_by = np.zeros(n, np.int8) if ensemble else None
    if carried is not None and broken_by is not None:
        before = carried.fooled
        adv_pred[before], fooled[before] = carried.adv_pred[before], True
        linf[before], l2[before], broken_by[before] = carried.linf[before], carried.l2[before], -1
        if keeper is not None:
            keeper.carry_over(before)
    forward = backward = queries = last_restart_broken = 0
    indices = np.flatnonzero(attacked)
    units = attack.gradient_steps * attack.restarts
    whole = batches is None  # a shard's tracker counts only the work of its own batches

    def run_for(**work: Any) -> AttackRun:
        return AttackRun(
            spec, index, eps, adv_pred, fooled, linf, l2, attacked, goal, stages=stages, broken_by=broken_by,
            cumulative=carried is not None, **work,
        )  # fmt: skip

    if eps == 0:  # nothing can move: the clean predictions, exactly, at no cost
        tracker.advance(units * int(clean_correct.sum()) if whole else 0.0, stage)
        return run_for(forward=0, backward=0, seconds=0.0, queries=0)
    bounds = options.input_range
    if indices.size and not attack.is_compiled(model, bounds):
        first = indices[:1]
        warm_seed = (*seed, _WARM_UP)
        if isinstance(attack, Ensemble):
            attack.warm_up(model, x[first], y[first], eps=eps, seed=warm_seed, input_range=bounds)
        else:
            attack(
                model, x[first], y[first], eps=eps, seed=warm_seed, input_range=bounds, targets=goal[first]
            )
    started = time.perf_counter()
    for batch, start in enumerate(range(0, indices.size, options.batch_size)):
        if batches is not None and batch not in batches:
            continue
        tracker.check()
        chosen = indices[start : start + options.batch_size]
        if ensemble:
            chosen = chosen[~fooled[chosen]]  # the survivors of the smaller eps
        if chosen.size:
            out = attack(
                model,
                x[chosen],
                y[chosen],
                eps=eps,
                seed=(*seed, batch),
                input_range=bounds,
                targets=goal[chosen],
            )
            adv_pred[chosen] = out.pred
            fooled[chosen] = out.success
            delta = (out.x_adv - x[chosen]).reshape(chosen.size, -1)
            linf[chosen] = np.abs(delta).max(axis=1)
            l2[chosen] = np.sqrt(np.square(delta, dtype=np.float64).sum(axis=1))
            forward += out.forward_passes
            backward += out.backward_passes
            queries += out.queries
            if not isinstance(out, EnsembleOutput):  # an ensemble counts it per stage
                last_restart_broken += out.last_restart_broken
            if isinstance(out, EnsembleOutput) and stages is not None and broken_by is not None:
                broken_by[chosen] = out.broken_by
                for total, work in zip(stages, out.stages, strict=True):
                    total.add(work)
            if keeper is not None:
                keeper.record(chosen, out.x_adv)
        tracker.advance(units * (min(start + options.batch_size, indices.size) - start), stage)
    # Samples left out (clean-wrong, or targeted at their own label) still count in the expected work.
    tracker.advance(units * int(clean_correct.sum() - indices.size) if whole else 0.0, stage)
    seconds = time.perf_counter() - started
    return run_for(
        forward=forward, backward=backward, seconds=seconds, queries=queries,
        last_restart_broken=last_restart_broken,
    )  # fmt: skip


def _versions() -> dict[str, str]:
    import keras

    try:
        parry = metadata.version("parry")
    except metadata.PackageNotFoundError:
        parry = "unknown"
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__, "parry": parry}
