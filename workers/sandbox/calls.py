"""What a model's child process can be asked to do: one method per operation, run inside the sandbox.

These are the only places a user's model is loaded or run. Each takes the JSON arguments the parent sent
(`workers/sandbox/jobs.py` builds them) and returns JSON; arrays are written as `.npz` files into the
call's `out` folder in the child's scratch directory. A loaded model stays loaded for the child's next
call (a warm child serves one owner's one model), so its compiled graphs are reused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.domain.datasets import ArrayDataset, DatasetError, load_builtin, load_npz
from service.domain.hard_sets import HardSetSpec
from service.domain.jobs import ErrorType
from service.domain.results import Progress
from service.domain.specs import EvaluationSpec, TrainingSpec
from workers.evaluation import engine
from workers.evaluation.engine import EvaluationCancelled, EvaluationError, evaluate
from workers.evaluation.examples import examples_npz
from workers.evaluation.hard_sets import predict_pool
from workers.evaluation.run_arrays import run_arrays
from workers.models.errors import ModelLoadError
from workers.models.loading import LoadedModel, load_model
from workers.natural.runs import shard_span
from workers.sandbox.protocol import CLEAN_FILE, EXAMPLES_FILE, HARD_SET_FILE, PER_SAMPLE_FILE, SHARD_FILE
from workers.training import TrainingCancelled, TrainingError, split_validation, train, trainable_variables

Reporter = Callable[[Progress], None]
StopCheck = Callable[[], bool]

# The engine's ways of saying it obeyed a stop request.
Stopped = (EvaluationCancelled, TrainingCancelled)

# The error type of each failure that is the user's to fix; anything else is an InternalError.
_USER_ERRORS: dict[type[Exception], ErrorType] = {
    ModelLoadError: ErrorType.MODEL_LOAD_ERROR,
    DatasetError: ErrorType.DATASET_ERROR,
    EvaluationError: ErrorType.EVALUATION_ERROR,
    TrainingError: ErrorType.TRAINING_ERROR,
}


def error_kind(exc: BaseException) -> ErrorType | None:
    """The documented error type of a failure the user can fix, or None for anything else."""
    for cls, kind in _USER_ERRORS.items():
        if isinstance(exc, cls):
            return kind
    return None


def save_npz(path: Path, arrays: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: np.asarray(value) for name, value in arrays.items()})  # type: ignore[arg-type]


def load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@functools.lru_cache(maxsize=4)
def _builtin(ref: str) -> ArrayDataset:
    # Read-only arrays shared by a warm child's jobs (the engine copies what it changes).
    return load_builtin(ref)


class Calls:
    """The child's operations, and the model it keeps loaded between them."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], LoadedModel] = {}

    def run(
        self, op: str, args: dict[str, Any], progress: Reporter, should_stop: StopCheck
    ) -> dict[str, Any]:
        operations: dict[str, Callable[[dict[str, Any], Reporter, StopCheck], dict[str, Any]]] = {
            "validate": self.validate,
            "evaluate": self.evaluate,
            "clean": self.clean,
            "shard": self.shard,
            "train": self.train,
            "hard_set": self.hard_set,
        }
        if op not in operations:
            raise ValueError(f"unknown operation {op!r}")
        return operations[op](args, progress, should_stop)

    # ---- inputs ------------------------------------------------------------------------------------

    def model(self, args: dict[str, Any], *, fresh: bool = False) -> LoadedModel:
        spec = args["model"]
        key = (spec["sha256"], spec["output"])
        if not fresh and key in self._models:
            return self._models[key]
        model = load_model(
            Path(spec["path"]), output=spec["output"], sha256=spec["sha256"], work_dir=Path(spec["work_dir"])
        )
        if not fresh:
            # "auto" resolved: the jobs after a validation ask for the kind it found.
            self._models[key] = self._models[(spec["sha256"], model.output)] = model
        return model

    @staticmethod
    def dataset(ref: dict[str, Any]) -> ArrayDataset:
        if "builtin" in ref:
            return _builtin(ref["builtin"])
        return load_npz(Path(ref["path"]))

    def ood_dataset(self, args: dict[str, Any]) -> ArrayDataset | None:
        ref = args.get("ood_dataset")
        return None if ref is None else self.dataset(ref)

    # ---- the operations -----------------------------------------------------------------------------

    def validate(self, args: dict[str, Any], progress: Reporter, should_stop: StopCheck) -> dict[str, Any]:
        """Load the model once: its shapes, output kind and whether training could update it."""
        model = self.model(args)
        try:
            trainable_variables(model)
            trainable: bool | None = True
            why = None
        except TrainingError as exc:
            trainable, why = False, str(exc)
        except Exception as exc:  # unknown: the training job says why in a sentence
            trainable, why = None, f"{type(exc).__name__}: {exc}"
        return {
            "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
            "output": model.output,
            "format": model.format,
            "trainable": trainable,
            "trainable_why": why,
        }

    def evaluate(self, args: dict[str, Any], progress: Reporter, should_stop: StopCheck) -> dict[str, Any]:
        model = self.model(args)
        dataset = self.dataset(args["dataset"])
        options = EvaluationSpec.model_validate(args["spec"]).options()
        outcome = evaluate(
            model,
            dataset,
            options,
            progress=progress,
            should_stop=should_stop,
            keep_examples=args["keep_examples"],
            ood_dataset=self.ood_dataset(args),
        )
        out = Path(args["out"])
        save_npz(out / PER_SAMPLE_FILE, outcome.per_sample)
        if outcome.examples is not None:
            (out / EXAMPLES_FILE).write_bytes(examples_npz(outcome.examples))
        return outcome.result.model_dump(mode="json")

    def clean(self, args: dict[str, Any], progress: Reporter, should_stop: StopCheck) -> dict[str, Any]:
        """A sharded evaluation's clean pass: its arrays in `out/clean.npz`, its facts returned."""
        model = self.model(args)
        dataset = self.dataset(args["dataset"])
        options = EvaluationSpec.model_validate(args["spec"]).options()
        x, y, warnings = engine._prepare(model, dataset, options)
        ood_dataset = self.ood_dataset(args)
        x_ood = engine.prepare_ood(model, ood_dataset, options)
        tracker = engine._Tracker(progress, should_stop)
        tracker.total = y.shape[0] * (1 + args["units_per_sample"]) + (0 if x_ood is None else x_ood.shape[0])
        clean_pred, zero_grad, bad_grad, scores = engine._clean_pass(model, x, y, options.batch_size, tracker)
        arrays = {
            "labels": y, "clean_pred": clean_pred, "zero_grad": zero_grad, "bad_grad": bad_grad,
            "clean_scores": scores,
        }  # fmt: skip
        if x_ood is not None:
            # The OOD set is scored whole here, so the merge judges per-sample scores, never shard figures.
            arrays["ood_scores"] = engine.score_pass(model, x_ood, options.batch_size, tracker)
        save_npz(Path(args["out"]) / CLEAN_FILE, arrays)
        return {
            "num_classes": model.num_classes,
            "model_sha256": model.sha256,
            "dataset_sha256": dataset.sha256,
            "ood_dataset_sha256": None if ood_dataset is None else ood_dataset.sha256,
            "warnings": warnings,
        }

    def shard(self, args: dict[str, Any], progress: Reporter, should_stop: StopCheck) -> dict[str, Any]:
        """A shard's attack runs over global batches [batch_start, batch_stop): arrays in `out/shard.npz`."""
        model = self.model(args)
        dataset = self.dataset(args["dataset"])
        options = EvaluationSpec.model_validate(args["spec"]).options()
        x, y, _ = engine._prepare(model, dataset, options)
        clean = load_npz_arrays(Path(args["clean"]))
        tracker = engine._Tracker(progress, should_stop)
        tracker.total = args["units"]
        runs = engine.attack_runs(
            model, x, y, clean["clean_pred"], options, tracker,
            batches=range(args["batch_start"], args["batch_stop"]),
        )  # fmt: skip
        arrays: dict[str, Any] = {}
        for i, run in enumerate(runs):
            arrays.update(run_arrays(run, i))
        images = engine.corruption_images(model, dataset, x, options)
        if images is not None:
            span = shard_span(
                args["batch_start"], args["batch_stop"], correct=int((clean["clean_pred"] == y).sum()),
                batch_size=options.batch_size, samples=y.shape[0],
            )  # fmt: skip
            arrays.update(engine.run_corruptions(model, images, y, options, tracker, span=span).arrays())
        save_npz(Path(args["out"]) / SHARD_FILE, arrays)
        return {"runs": len(runs)}

    def train(self, args: dict[str, Any], progress: Reporter, should_stop: StopCheck) -> dict[str, Any]:
        """Adversarially train a fresh copy of the model; the exports' paths and the result."""
        model = self.model(args, fresh=True)  # training changes weights in place
        spec = TrainingSpec.model_validate(args["spec"])
        data = self.dataset(args["dataset"])
        if args.get("validation") is None:
            train_data, val_data = split_validation(data, seed=spec.seed)
        else:
            train_data, val_data = data, self.dataset(args["validation"])
        folder = Path(args["folder"])
        outcome = train(
            model, train_data, val_data, spec.options(),
            checkpoint_dir=folder / "checkpoint", export_dir=folder / "export", progress=progress,
            should_stop=should_stop,
        )  # fmt: skip
        return {
            "result": outcome.result.model_dump(mode="json"),
            "saved_model_zip": str(outcome.saved_model_zip),
            "keras_path": None if outcome.keras_path is None else str(outcome.keras_path),
            "train_samples": train_data.num_samples,
            "validation_samples": val_data.num_samples,
            "model": {
                "input_shape": list(model.input_shape),
                "num_classes": model.num_classes,
                "output": model.output,
            },
        }

    def hard_set(self, args: dict[str, Any], progress: Reporter, should_stop: StopCheck) -> dict[str, Any]:
        """One surrogate of a hard set: each pool sample's class and confidence, in `out/hard_set.npz`."""
        model = self.model(args)
        dataset = self.dataset(args["dataset"])
        spec = HardSetSpec.model_validate(args["spec"])
        index, count = (int(v) for v in args["part"])
        pred, confidence = predict_pool(
            model, dataset, input_range=spec.input_range, max_samples=spec.max_samples,
            batch_size=spec.batch_size, part=(index, count), progress=progress, should_stop=should_stop,
        )  # fmt: skip
        save_npz(Path(args["out"]) / HARD_SET_FILE, {"pred": pred, "confidence": confidence})
        return {
            "num_samples": int(pred.shape[0]),
            "model_sha256": model.sha256,
            "dataset_sha256": dataset.sha256,
        }
