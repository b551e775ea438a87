"""A minimum-norm attack's one run turned into the report: its eps rows, its `minimum_norm` entry.

The run holds each sample's minimal norm (0 when wrong clean, inf when none was found). At an eps, a sample
is robust when it was correct clean and its minimal norm is above eps, so every row, the worst case and
the thresholds come from the norms alone, and a sharded evaluation merges norms, never figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from service.domain.results import CurvePoint, MinimumNormQuantiles, MinimumNormResult
from service.domain.specs import AttackSpecBase, EvaluationOptions
from workers.attacks import MinimumNormAttack
from workers.evaluation.examples import ExampleKeeper
from workers.evaluation.robustness import AttackRun, cost
from workers.models.loading import LoadedModel

CURVE_POINTS = 256
QUANTILES = {"p10": 0.10, "p25": 0.25, "p75": 0.75, "p90": 0.90}


def run_minimum_norm(
    model: LoadedModel,
    attack: MinimumNormAttack,
    spec: AttackSpecBase,
    x: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    options: EvaluationOptions,
    *,
    index: int,
    check: Callable[[], None],
    advance: Callable[[float], None],
    batches: range | None = None,
    keeper: ExampleKeeper | None = None,
) -> AttackRun:
    """The attack's search over the clean-correct samples, batch by batch (only `batches` when given)."""
    if keeper is not None:
        keeper.start(x)
    n = x.shape[0]
    attacked = clean_pred == y
    norms = np.where(attacked, np.inf, 0.0)
    adv_pred, fooled = clean_pred.copy(), np.zeros(n, bool)
    linf, l2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    indices = np.flatnonzero(attacked)
    forward = backward = 0
    bounds = options.input_range
    if indices.size and not attack.is_compiled(model, bounds):
        attack.minimize(model, x[indices[:1]], y[indices[:1]], input_range=bounds)  # traced off the clock
    started = time.perf_counter()
    for batch, start in enumerate(range(0, indices.size, options.batch_size)):
        chosen = indices[start : start + options.batch_size]
        if batches is not None and batch not in batches:
            continue
        check()
        out = attack.minimize(model, x[chosen], y[chosen], input_range=bounds, check=check)
        norms[chosen] = out.norms
        adv_pred[chosen], fooled[chosen] = out.pred, out.success
        delta = (out.x_adv - x[chosen]).reshape(chosen.size, -1)
        linf[chosen] = np.abs(delta).max(axis=1, initial=0.0)
        l2[chosen] = np.sqrt(np.square(delta, dtype=np.float64).sum(axis=1))
        forward, backward = forward + out.forward_passes, backward + out.backward_passes
        if keeper is not None:
            keeper.record(chosen, out.x_adv)
        advance(float(chosen.size))
    seconds = time.perf_counter() - started
    return AttackRun(
        spec, index, math.inf, adv_pred, fooled, linf, l2, attacked, y, forward, backward, seconds,
        norms=norms,
    )  # fmt: skip


def eps_rows(run: AttackRun, clean_pred: np.ndarray) -> list[AttackRun]:
    """One row per eps of the spec: fooled where the minimal norm is at most eps (each row is the one run,
    so its cost and seconds are the whole run's)."""
    assert run.norms is not None
    rows = []
    for eps in run.spec.eps_values():
        fooled = run.attacked & (run.norms <= eps)
        rows.append(
            replace(
                run, eps=eps, fooled=fooled, adv_pred=np.where(fooled, run.adv_pred, clean_pred),
                linf=np.where(fooled, run.linf, 0.0).astype(np.float32),
                l2=np.where(fooled, run.l2, 0.0).astype(np.float32), norms=None,
            )
        )  # fmt: skip
    return rows


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def curve(norms: np.ndarray, clean_correct: np.ndarray) -> list[CurvePoint]:
    """Robust accuracy (over all samples) at eps 0 and at each distinct finite minimal norm, ascending."""
    n = norms.size
    if n == 0:
        return []
    candidates = np.unique(norms[clean_correct & np.isfinite(norms)])
    if candidates.size > CURVE_POINTS - 1:
        picks = np.linspace(0, candidates.size - 1, CURVE_POINTS - 1).round().astype(int)
        candidates = candidates[np.unique(picks)]
    eps_values = np.unique(np.concatenate([[0.0], candidates]))
    ordered = np.sort(np.where(clean_correct, norms, 0.0))
    # Robust at eps: correct clean and minimal norm above eps.
    above = n - np.searchsorted(ordered, eps_values, side="right")
    return [
        CurvePoint(eps=float(e), robust_accuracy=float(a) / n) for e, a in zip(eps_values, above, strict=True)
    ]


def summary(run: AttackRun, clean_correct: np.ndarray) -> MinimumNormResult:
    """The `minimum_norm` entry of one run."""
    assert run.norms is not None
    searched = run.norms[clean_correct]
    found = searched[np.isfinite(searched)]
    n = clean_correct.size

    ordered = np.sort(searched)

    def quantile(q: float) -> float | None:
        # The lower quantile, a sample's own norm: inf sorts last, so a rank past the found samples is inf.
        return _finite(float(ordered[math.floor(q * (ordered.size - 1))])) if ordered.size else None

    spec: dict[str, Any] = run.spec.model_dump(mode="json")
    return MinimumNormResult(
        name=run.spec.name,
        norm=run.spec.norm,
        attack=run.index,
        spec=spec,
        median=quantile(0.5),
        mean=float(found.mean()) if found.size else None,
        quantiles=MinimumNormQuantiles(**{key: quantile(q) for key, q in QUANTILES.items()}),
        curve=curve(run.norms, clean_correct),
        num_attacked=int(searched.size),
        num_found=int(found.size),
        seconds=run.seconds,
        cost=cost(run.forward, run.backward, n),
    )


def split_runs(runs: Sequence[AttackRun], clean_pred: np.ndarray) -> tuple[list[AttackRun], list[AttackRun]]:
    """The report's rows in spec order (a minimum-norm run replaced by its eps rows) and the minimum-norm
    runs themselves."""
    rows: list[AttackRun] = []
    minimum: list[AttackRun] = []
    for run in runs:
        if run.norms is None:
            rows.append(run)
        else:
            minimum.append(run)
            rows += eps_rows(run, clean_pred)
    return rows, minimum
