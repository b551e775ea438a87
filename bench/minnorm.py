"""Minimum-norm attacks side by side: Parry's cw and fmn against ART's CarliniL2Method and Foolbox's C&W/FMN.

Models by `--models` (default: the clean CNN of the bench recipes, 5 epochs, and trades, 20 epochs),
trained and cached by bench/strong.py's `trained_models`, so a file in `--cache` is the same model for both
scripts. On the first `--samples` images of builtin:mnist-5k:test (ART and Foolbox on the first
`--peer-samples`, their loops being slow), per attack: median L2 of the minimal adversarials over the
clean-correct samples (inf counts as inf), the share found, model passes per sample, and seconds.

- Parry cw at its default budget (9 searches x 1,000 steps, early abort) and fmn-L2 at `--fmn-steps`;
- ART CarliniL2Method at its defaults, and Parry cw with ART's forward+backward passes (matched budget:
  ART's passes are counted in the model it calls, each gradient counting as one forward and one backward);
- Foolbox L2CarliniWagnerAttack and L2FMNAttack when foolbox imports beside TensorFlow;
- PGD-L2 (40 steps) at `--pgd-eps`, and cw's curve at the same eps (the consistency target).

    python bench/minnorm.py [--samples 1000] [--peer-samples 100] [--models clean,trades] [--cache DIR]
        [--fmn-steps 200,800] [--pgd-eps 1.0,1.5,2.0] [--foolbox-cw-steps 1000] [--no-peers]

Rows print as they finish (a long run shows its figures as it goes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.strong import RECIPES, pass_costs, trained_models  # noqa: E402
from service.domain.datasets import load_builtin  # noqa: E402
from service.domain.specs import CWSpec, EvaluationOptions, FMNSpec, PGDSpec  # noqa: E402
from workers.evaluation.engine import evaluate  # noqa: E402
from workers.models.loading import from_keras  # noqa: E402

Row = tuple[str, float, float, float, float]  # label, median L2, found share, passes per sample, seconds


def median_of(norms: np.ndarray) -> float:
    return float(np.sort(norms)[(norms.size - 1) // 2]) if norms.size else float("nan")


def show(row: Row) -> Row:
    label, median, found, passes, seconds = row
    print(f"  {label:<36} {median:>9.4f} {found:>6.1%} {passes:>13.0f} {seconds:>8.1f}", flush=True)
    return row


def parry_rows(keras_model: Any, samples: int, fmn_steps: list[int], pgd_eps: list[float]) -> list[Row]:
    data = load_builtin("builtin:mnist-5k:test")
    rows: list[Row] = []
    specs: list[tuple[str, Any]] = [("parry cw 9x1000", CWSpec(eps=pgd_eps))]
    specs += [(f"parry fmn-l2 {s}", FMNSpec(norm="l2", steps=s)) for s in fmn_steps]
    for label, spec in specs:
        options = EvaluationOptions(attacks=[spec], max_samples=samples, batch_size=250)
        started = time.perf_counter()
        outcome = evaluate(from_keras(keras_model), data, options)
        seconds = time.perf_counter() - started
        entry = outcome.result.minimum_norm[0]
        norms = outcome.per_sample["minimum_norm_0"][outcome.per_sample["clean_correct"]]
        passes = entry.cost.forward_passes / max(entry.num_attacked, 1)
        found = entry.num_found / max(entry.num_attacked, 1)
        rows.append(show((label, median_of(norms), found, passes, seconds)))
        if spec.name == "cw":  # its rows at the PGD eps are its curve there
            cw_at = [row.robust_accuracy for row in outcome.result.attacks]
    pgd = EvaluationOptions(attacks=[PGDSpec(eps=pgd_eps, norm="l2", steps=40)], max_samples=samples)
    rows_pgd = evaluate(from_keras(keras_model), data, pgd).result.attacks
    print("  consistency (robust accuracy at each eps: cw's curve, PGD-40-L2; target cw <= PGD + 1 point)")
    for eps, cw_acc, row in zip(pgd_eps, cw_at, rows_pgd, strict=True):
        verdict = "met" if cw_acc <= row.robust_accuracy + 0.01 else "NOT met"
        print(f"    eps={eps:g}: cw {cw_acc:.1%}  pgd {row.robust_accuracy:.1%}  {verdict}", flush=True)
    return rows


class Counter:
    """Samples through the model, counted in the callable ART and Foolbox get (forward; under a gradient
    tape too, so a gradient call counts one forward here and one backward in `backward`)."""

    def __init__(self) -> None:
        self.forward = 0


def art_rows(keras_model: Any, x: np.ndarray, y: np.ndarray, parry_model: Any) -> list[Row]:
    import tensorflow as tf
    from art.attacks.evasion import CarliniL2Method
    from art.estimators.classification import TensorFlowV2Classifier

    from workers.attacks import CW

    seen = tf.Variable(0, dtype=tf.int64, trainable=False)

    class Counted(tf.keras.Model):  # type: ignore[misc]
        def call(self, inputs: Any) -> Any:  # ART traces it: count in the graph
            with tf.control_dependencies([seen.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))]):
                return keras_model(tf.identity(inputs))

    classifier = TensorFlowV2Classifier(
        Counted(), nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )  # fmt: skip
    correct = np.argmax(keras_model(x).numpy(), axis=1) == y
    x, y = x[correct], y[correct]
    attack = CarliniL2Method(classifier, batch_size=len(x), verbose=False)
    started = time.perf_counter()
    x_adv = attack.generate(x)
    seconds = time.perf_counter() - started
    fooled = np.argmax(keras_model(x_adv).numpy(), axis=1) != y
    norms = np.where(fooled, np.sqrt(((x_adv - x) ** 2).reshape(len(x), -1).sum(1)), np.inf)
    passes = int(seen.numpy()) / len(x)
    art = ("ART CarliniL2Method (defaults)", median_of(norms), float(fooled.mean()), passes, seconds)
    rows: list[Row] = [show(art)]
    # Parry's cw with ART's passes: ART's 10 searches, its initial c, steps so the passes match.
    steps = max(1, round(passes / 10))
    cw = CW(binary_search_steps=10, steps=steps, initial_const=0.01, abort_early=False)
    cw.minimize(parry_model, x[:1], y[:1])  # trace off the clock
    started = time.perf_counter()
    out = cw.minimize(parry_model, x, y)
    seconds = time.perf_counter() - started
    label = f"parry cw 10x{steps} (ART's passes)"
    found = float(np.isfinite(out.norms).mean())
    rows.append(show((label, median_of(out.norms), found, out.forward_passes / len(x), seconds)))
    # What bounds the speed-up: one compiled forward+backward pass at this batch size, times Parry's passes.
    # A Parry running exactly at that floor would still be only ART's seconds / floor faster than ART.
    both, _ = pass_costs(keras_model, x, y, batch=len(x))
    floor = both * out.forward_passes
    print(
        f"  floor of cw at ART's passes (compiled fwd+bwd {both * 1e3:.3f} ms/sample): {floor:.1f} s; "
        f"Parry {seconds / floor:.2f}x floor, ART {art[4] / floor:.2f}x it, so no C&W at these passes "
        f"can beat ART by more than {art[4] / floor:.1f}x here (Parry: {art[4] / seconds:.1f}x)",
        flush=True,
    )
    return rows


def foolbox_rows(keras_model: Any, x: np.ndarray, y: np.ndarray, cw_steps: int) -> list[Row]:
    try:
        import foolbox as fb
        import tensorflow as tf
    except Exception as exc:  # noqa: BLE001 - any import failure means "does not run here"
        print(f"  foolbox does not import beside TensorFlow here: {exc}")
        return []
    counter = Counter()

    def counted(inputs: Any) -> Any:
        counter.forward += int(inputs.shape[0])
        return keras_model(inputs)

    model = fb.TensorFlowModel(counted, bounds=(0.0, 1.0))
    correct = np.argmax(keras_model(x).numpy(), axis=1) == y
    xt, yt = tf.constant(x[correct]), tf.constant(y[correct].astype(np.int64))
    rows: list[Row] = []
    for label, attack in [
        (
            f"foolbox C&W 9x{cw_steps}",
            fb.attacks.L2CarliniWagnerAttack(binary_search_steps=9, steps=cw_steps),
        ),
        ("foolbox FMN-L2 200", fb.attacks.L2FMNAttack(steps=200)),
    ]:
        counter.forward = 0
        started = time.perf_counter()
        try:
            _, clipped, success = attack(model, xt, yt, epsilons=None)
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
            print(f"  {label} failed beside TensorFlow: {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - started
        adv, ok = np.asarray(clipped), np.asarray(success)
        n = adv.shape[0]
        norms = np.where(ok, np.sqrt(((adv - x[correct]) ** 2).reshape(n, -1).sum(1)), np.inf)
        rows.append(show((label, median_of(norms), float(ok.mean()), counter.forward / n, seconds)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--peer-samples", type=int, default=100)
    parser.add_argument("--models", default="clean,trades", help=f"clean and any of {', '.join(RECIPES)}")
    parser.add_argument("--cache", type=Path, default=Path("bench-models"))
    parser.add_argument("--fmn-steps", default="200,800")
    parser.add_argument("--pgd-eps", default="1.0,1.5,2.0")
    parser.add_argument("--foolbox-cw-steps", type=int, default=1000)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-parry", action="store_true", help="the peers' rows only")
    args = parser.parse_args()
    fmn_steps = [int(s) for s in args.fmn_steps.split(",")]
    pgd_eps = [float(e) for e in args.pgd_eps.split(",")]
    data = load_builtin("builtin:mnist-5k:test")
    x = np.asarray(data.x[: args.peer_samples], np.float32).reshape(-1, 28, 28, 1)
    y = np.asarray(data.y[: args.peer_samples], np.int64)
    # strong.py's models and cache names: one file in --cache is one model, whichever script trained it.
    names = args.models.split(",")
    for name, keras_model in trained_models(names, args.cache).items():
        print(f"\n== {name}: Parry on {args.samples} images, ART/Foolbox on {args.peer_samples}", flush=True)
        print(f"  {'attack':<36} {'median L2':>9} {'found':>6} {'passes/sample':>13} {'seconds':>8}")
        if not args.no_parry:
            parry_rows(keras_model, args.samples, fmn_steps, pgd_eps)
        if not args.no_peers:
            art_rows(keras_model, x, y, from_keras(keras_model))
            foolbox_rows(keras_model, x, y, args.foolbox_cw_steps)


if __name__ == "__main__":
    main()
