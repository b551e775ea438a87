"""The adversarial-training loop: compiled step, schedules, validation, early stop, rollback, resume.

One job is one `AdversarialTrainer.run`. Its state is checkpointed every epoch (and every few batches),
and every random draw is derived from (seed, epoch, batch), so a redelivered job continues where the
last checkpoint left it and ends with the weights an uninterrupted run would have produced.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.domain.datasets import ArrayDataset, range_warning
from service.domain.results import EpochRecord, EvaluationResult, Progress, TrainingResult, ValidationCheck
from service.domain.specs import TrainingOptions
from workers.attacks import derive_seed
from workers.models.errors import first_sentence
from workers.models.loading import LoadedModel
from workers.training import checkpoint, divergence, schedules
from workers.training.checkpoint import Checkpoint, RunState
from workers.training.checks import EpochCheck, evaluate_attacks, evaluation_units
from workers.training.data import prepare, validation_subset
from workers.training.divergence import Check
from workers.training.errors import TrainingCancelled, TrainingError
from workers.training.export import export_keras, export_saved_model_zip
from workers.training.methods import MethodConfig, adversarial_inputs, training_loss
from workers.training.optimizer import Adam
from workers.training.progress import ProgressTracker
from workers.training.starts import PreviousPerturbations
from workers.training.variables import trainable_variables

# Samples of the validation subset that the within-epoch divergence probe predicts (clean only: cheap).
_PROBE_SAMPLES = 200
# Probes per epoch: a collapse is caught a quarter of an epoch after it happens, not at the epoch's end.
_PROBES_PER_EPOCH = 4


@dataclass
class TrainingOutcome:
    """The result, the trained model (the same object, updated in place) and its exported files."""

    result: TrainingResult
    model: LoadedModel
    saved_model_zip: Path
    keras_path: Path | None

    @property
    def keras_model(self) -> Any:
        return self.model.keras_model


def train(
    model: LoadedModel,
    train_data: ArrayDataset,
    val_data: ArrayDataset,
    spec: TrainingOptions,
    *,
    checkpoint_dir: Path,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    export_dir: Path | None = None,
    checkpoint_every: int = 100,
) -> TrainingOutcome:
    """Adversarially train `model` in place from its current weights and export it.

    A checkpoint in `checkpoint_dir` from an earlier run of the same job (same model, data and options)
    is resumed; any other is ignored and overwritten. Exports go to `export_dir` (default
    `checkpoint_dir / "export"`): `model.zip` (SavedModel archive) and `model.keras` (Keras models only).

    Raises:
        TrainingError: the model has nothing to train, or the data does not fit it.
        TrainingCancelled: `should_stop()` returned True (between two batches).
    """
    trainer = AdversarialTrainer(
        model, spec, checkpoint_dir=Path(checkpoint_dir), checkpoint_every=checkpoint_every
    )
    return trainer.run(
        train_data,
        val_data,
        progress=progress,
        should_stop=should_stop,
        export_dir=Path(export_dir) if export_dir is not None else Path(checkpoint_dir) / "export",
    )


class AdversarialTrainer:
    """Adversarial training (Madry et al. PGD, Wong et al. FGSM-RS, or Zhang et al. TRADES) with Adam.

    Args:
        model: trained in place; its `logits` must read the variables to train.
        options: the method and its schedule (a TrainingSpec or TrainingOptions).
        checkpoint_dir: where the run's checkpoint lives.
        checkpoint_every: batches between two checkpoints inside an epoch (one is always written at
            the end of an epoch and on cancellation).
    """

    def __init__(
        self,
        model: LoadedModel,
        options: TrainingOptions,
        *,
        checkpoint_dir: Path,
        checkpoint_every: int = 100,
    ) -> None:
        self._clock = time.perf_counter()  # the run's wall time includes tracing the step
        self.model, self.options = model, options
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, max(1, checkpoint_every)
        self.variables, self._all_variables = trainable_variables(model)
        self.config = MethodConfig(
            method=options.method,
            norm=options.norm,
            steps=options.steps,
            beta=options.beta,
            clean_fraction=options.clean_fraction,
            bounds=(float(options.input_range[0]), float(options.input_range[1])),
            previous_start=options.method == "fgsm-rs" and options.fgsm_start == "previous",
        )
        self.previous: PreviousPerturbations | None = None  # set per run, sized by its training data
        self.optimizer = Adam(self.variables)
        self._step = self._compile_step()
        self._epoch_check = EpochCheck(model, options)
        self._chance = 0.0  # of the run's validation subset: the accuracy of answering one class

    # --- the compiled step ----------------------------------------------------------------------------
    def _compile_step(self) -> Callable[..., Any]:
        model, config, variables, optimizer = self.model, self.config, self.variables, self.optimizer
        missing: list[int] = []

        def step(
            x: tf.Tensor,
            y: tf.Tensor,
            eps: tf.Tensor,
            step_size: tf.Tensor,
            lr: tf.Tensor,
            seed: tf.Tensor,
            *previous: tf.Tensor,
        ) -> Any:
            x_adv = adversarial_inputs(
                config,
                model.logits,
                x,
                y,
                eps=eps,
                step_size=step_size,
                seed=seed,
                previous=(previous[0], previous[1]) if previous else None,
            )
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(variables)
                loss, z = training_loss(config, model.logits, x, x_adv, y)
            grads = tape.gradient(loss, variables)
            missing[:] = [i for i, g in enumerate(grads) if g is None]  # known when tracing
            optimizer.apply(grads, lr)
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(z, axis=-1, output_type=tf.int64), y), tf.int64)
            )
            return (loss, correct, x_adv - x) if previous else (loss, correct)

        signature = [
            tf.TensorSpec((None, *model.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((2,), tf.int64),
        ]
        if config.previous_start:  # each sample's last perturbation, and whether it has one yet
            signature += [tf.TensorSpec((None, *model.input_shape), tf.float32), tf.TensorSpec((), tf.bool)]
        compiled = tf.function(step, input_signature=signature, autograph=False)
        try:
            compiled.get_concrete_function()
        except Exception as exc:
            raise TrainingError(f"The model's training step cannot be built: {first_sentence(exc)}") from exc
        if len(missing) == len(variables):
            raise TrainingError(
                "The model's loss has no gradient with respect to any of its variables, "
                "so it cannot be trained."
            )
        run: Callable[..., Any] = compiled
        return run

    # --- one job --------------------------------------------------------------------------------------
    def run(
        self,
        train_data: ArrayDataset,
        val_data: ArrayDataset,
        *,
        progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        export_dir: Path,
    ) -> TrainingOutcome:
        opts = self.options
        x, y = self._prepare(train_data, "training")
        x_val, y_val = self._prepare(val_data, "validation")
        subset = validation_subset(x_val.shape[0], opts.validation_samples, opts.seed)
        self.previous = PreviousPerturbations(x) if self.config.previous_start else None
        state, resumed = self._resume(self._fingerprint(train_data, val_data))
        stop = should_stop or (lambda: False)
        train_units = x.shape[0] * self.config.passes_per_sample
        check_units = subset.size * (opts.validation_steps + 1)
        eval_units = evaluation_units(opts, x_val.shape[0])
        done = (eval_units if state.before is not None else 0) + state.epoch * (train_units + check_units)
        done += state.seen * self.config.passes_per_sample
        done += check_units if state.uploaded is not None else 0
        tracker = ProgressTracker(
            progress, total=2 * eval_units + (opts.epochs + 1) * (train_units + check_units), done=done
        )
        tracker.total -= train_units  # epoch 0 (the uploaded model) is checked, not trained
        x_check, y_check = x_val[subset], y_val[subset]
        data_warnings = [
            f"{what}: {warning}"
            for what, values in (("training data", x), ("validation data", x_val))
            if (warning := range_warning(float(values.min()), float(values.max()), opts.input_range))
        ]
        self._chance = divergence.chance_level(y_check)

        if state.before is None and opts.evaluate:
            stage = "evaluate before"
            before = evaluate_attacks(self.model, opts, val_data, tracker, eval_units, stage, stop)
            state.before = before.model_dump(mode="json")
            self._save(state)
            state.epoch_seconds = 0.0
        if state.uploaded is None:
            # Epoch 0: the uploaded model on the check every epoch gets, the bar a divergence is judged by.
            uploaded_clean, uploaded_robust = self._epoch_check.run(
                x_check,
                y_check,
                opts.epochs,  # a seed path no training epoch uses
                tracker,
                before_batch=lambda: self._check(stop, state),
                stage="validate the uploaded model",
            )
            state.uploaded = {"clean": uploaded_clean, "robust": uploaded_robust}
            self._save(state)
        if not state.finished:
            self._train(state, x, y, x_check, y_check, tracker, stop)
        after = (
            evaluate_attacks(self.model, opts, val_data, tracker, eval_units, "evaluate after", stop)
            if opts.evaluate
            else None
        )

        tracker.report("export", force=True)
        zip_path = export_saved_model_zip(self.model, export_dir / "model.zip")
        keras_path = export_keras(self.model, export_dir / "model.keras")
        if keras_path is None:
            state.notes.append(
                "the model was uploaded as a SavedModel, so it is exported as a SavedModel only"
            )
        history = [EpochRecord(**h) for h in state.history]
        robust = [h.robust_accuracy for h in history]
        exported = (
            state.kept
            if state.kept is not None
            else schedules.best_epoch(robust)
            if state.rolled_back or state.stopped_early
            else len(history) - 1
        )
        uploaded = self._uploaded(state)
        if exported is not None and history:
            kept = history[exported]
            if divergence.worse_on_both(Check(kept.clean_accuracy, kept.robust_accuracy), uploaded):
                state.warnings.append(
                    f"the trained model is worse than the uploaded one on both clean accuracy "
                    f"({kept.clean_accuracy:.1%} against {uploaded.clean:.1%}) and robust accuracy "
                    f"({kept.robust_accuracy:.1%} against {uploaded.robust:.1%}) on the validation check; "
                    f"keep the uploaded model, or {divergence.hint(opts.learning_rate, opts.lr_schedule)}"
                )
        result = TrainingResult(
            method=opts.method,
            history=history,
            best_epoch=None if exported is None or not history else exported + 1,
            epochs_completed=len(history),
            stopped_early=state.stopped_early,
            rolled_back=state.rolled_back,
            notes=state.notes + data_warnings + state.warnings,
            warnings=data_warnings + state.warnings,
            uploaded=ValidationCheck(clean_accuracy=uploaded.clean, robust_accuracy=uploaded.robust),
            before=EvaluationResult(**state.before) if state.before is not None else None,
            after=after,
            num_train_samples=int(x.shape[0]),
            num_validation_samples=int(x_val.shape[0]),
            seconds=self._tick(state),
            resumed=resumed,
            model_sha256=self.model.sha256,
            train_dataset_sha256=train_data.sha256,
            validation_dataset_sha256=val_data.sha256,
            seed=opts.seed,
            versions=_versions(),
        )
        tracker.advance(tracker.total, "done", force=True)
        return TrainingOutcome(result, self.model, zip_path, keras_path)

    def _train(
        self,
        state: RunState,
        x: np.ndarray,
        y: np.ndarray,
        x_check: np.ndarray,
        y_check: np.ndarray,
        tracker: ProgressTracker,
        stop: Callable[[], bool],
    ) -> None:
        opts = self.options
        n, size = x.shape[0], opts.batch_size
        batches = math.ceil(n / size)
        total_steps = opts.epochs * batches
        ramp_steps = round(opts.ramp_epochs() * batches)
        full_step = opts.step_size_at_full_eps()
        lr = opts.learning_rate
        probe_every = max(1, batches // _PROBES_PER_EPOCH)
        for epoch in range(state.epoch, opts.epochs):
            order = np.random.default_rng([opts.seed, epoch]).permutation(n)
            for batch in range(state.batch, batches):
                self._check(stop, state)
                chosen = order[batch * size : (batch + 1) * size]
                g = epoch * batches + batch
                eps = schedules.eps_at(g, eps=opts.eps, ramp_steps=ramp_steps)
                lr = schedules.learning_rate_at(
                    g, base=opts.learning_rate, total_steps=total_steps, schedule=opts.lr_schedule
                )
                starts = () if self.previous is None else (self.previous.take(chosen), np.bool_(epoch > 0))
                loss, correct, *perturbation = self._step(
                    x[chosen],
                    y[chosen],
                    np.float32(eps),
                    np.float32(full_step * eps / opts.eps),
                    np.float32(lr),
                    derive_seed(opts.seed, epoch, batch),
                    *starts,
                )
                if self.previous is not None:
                    self.previous.store(chosen, perturbation[0].numpy())
                problem = divergence.loss_problem(float(loss), state.first_loss)
                if problem is None and (batch + 1) % probe_every == 0 and batch + 1 < batches:
                    problem = self._probe(state, x_check, y_check)
                if problem is not None:
                    self._diverged(state, f"{problem} at epoch {epoch + 1}, batch {batch + 1}", epochs=epoch)
                    self._save(state)
                    return
                if state.first_loss is None:
                    state.first_loss = float(loss)
                state.loss_sum += float(loss) * chosen.size
                state.correct += int(correct)
                state.seen += chosen.size
                state.batch = batch + 1
                tracker.advance(
                    chosen.size * self.config.passes_per_sample,
                    f"epoch {epoch + 1}/{opts.epochs} batch {batch + 1}/{batches} "
                    f"loss {state.loss_sum / state.seen:.4f}",
                    force=batch == 0,  # an epoch's start shows at once, whatever was reported just before
                )
                if state.batch % self.checkpoint_every == 0 and state.batch < batches:
                    self._save(state)

            clean, robust = self._epoch_check.run(
                x_check, y_check, epoch, tracker, before_batch=lambda: self._check(stop, state)
            )
            self._tick(state)
            record = EpochRecord(
                epoch=epoch + 1,
                loss=state.loss_sum / max(state.seen, 1),
                train_accuracy=state.correct / max(state.seen, 1),
                clean_accuracy=clean,
                robust_accuracy=robust,
                eps=schedules.eps_at((epoch + 1) * batches - 1, eps=opts.eps, ramp_steps=ramp_steps),
                learning_rate=lr,
                seconds=state.epoch_seconds,
            )
            state.history.append(record.model_dump())
            state.epoch, state.batch = epoch + 1, 0
            state.loss_sum, state.correct, state.seen, state.epoch_seconds = 0.0, 0, 0, 0.0
            tracker.report(
                f"epoch {epoch + 1}/{opts.epochs} clean {clean:.3f} robust {robust:.3f}", force=True
            )
            problem = divergence.check_problem(
                Check(clean, robust),
                uploaded=self._uploaded(state),
                best=self._best(state, epoch),
                chance=self._chance,
            )
            if problem is not None:
                self._diverged(state, f"{problem} at epoch {epoch + 1}", epochs=epoch)
                self._save(state)
                return
            self._after_epoch(state)
            self._save(state)
            if state.finished:
                return
        state.finished = True
        self._save(state)

    def _uploaded(self, state: RunState) -> Check:
        assert state.uploaded is not None
        return Check(state.uploaded["clean"], state.uploaded["robust"])

    def _best(self, state: RunState, epochs: int | None = None) -> Check:
        """The best, by robust accuracy, of the uploaded model and the first `epochs` epochs (default all)."""
        checks = [self._uploaded(state)] + [
            Check(h["clean_accuracy"], h["robust_accuracy"]) for h in state.history[:epochs]
        ]
        index = schedules.best_epoch([c.robust for c in checks])
        assert index is not None
        return checks[index]

    def _probe(self, state: RunState, x_check: np.ndarray, y_check: np.ndarray) -> str | None:
        clean = self._epoch_check.clean(x_check[:_PROBE_SAMPLES], y_check[:_PROBE_SAMPLES])
        uploaded = self._uploaded(state).clean
        if divergence.fell_to_chance(clean, uploaded, self._chance):
            return f"clean accuracy fell to {clean:.1%}, chance level (the uploaded model had {uploaded:.1%})"
        return None

    def _diverged(self, state: RunState, reason: str, *, epochs: int) -> None:
        """Roll back to the best of the first `epochs` epochs if it beats the uploaded model (a note says
        so), else raise TrainingError with the likely cause: a diverged model is never registered."""
        opts, uploaded = self.options, self._uploaded(state)
        robust = [h["robust_accuracy"] for h in state.history[:epochs]]
        best = schedules.best_epoch(robust)
        if (
            best is None
            or not divergence.beats(self._best(state, epochs), uploaded)
            or state.best_file is None
        ):
            raise TrainingError(
                f"The training diverged: {reason}, and no epoch beat the uploaded model (clean "
                f"{uploaded.clean:.1%}, robust {uploaded.robust:.1%} on the validation check), so no model "
                f"was registered; {divergence.hint(opts.learning_rate, opts.lr_schedule)}."
            )
        self._set_weights(checkpoint.load_best(self.checkpoint_dir, state.best_file, len(self.variables)))
        kept = state.history[best]
        state.notes.append(
            f"the training diverged ({reason}); rolled back to epoch {best + 1} (clean "
            f"{kept['clean_accuracy']:.1%}, robust {kept['robust_accuracy']:.1%}), which beats the uploaded "
            f"model (robust {uploaded.robust:.1%}), and stopped; next time "
            f"{divergence.hint(opts.learning_rate, opts.lr_schedule)}"
        )
        state.rolled_back, state.finished, state.kept = True, True, best

    def _after_epoch(self, state: RunState) -> None:
        """Keep the best weights; roll back on a robust-accuracy collapse or exhausted patience."""
        opts = self.options
        robust = [h["robust_accuracy"] for h in state.history]
        if schedules.best_epoch(robust) == len(robust) - 1:
            state.best_file = checkpoint.save_best(self.checkpoint_dir, len(robust), self._weights())
        target = schedules.collapse(robust) if opts.guard_enabled() else None
        if target is not None:
            state.notes.append(
                f"catastrophic overfitting at epoch {len(robust)}: validation PGD accuracy fell from "
                f"{robust[target]:.3f} (epoch {target + 1}) to {robust[-1]:.3f}; rolled back to epoch "
                f"{target + 1} and stopped"
            )
            state.rolled_back = True
        elif schedules.patience_exhausted(robust, opts.early_stop_patience):
            target = schedules.best_epoch(robust)
            assert target is not None
            state.notes.append(
                f"early stop after epoch {len(robust)}: no better validation PGD accuracy for "
                f"{opts.early_stop_patience} epochs; kept epoch {target + 1} ({robust[target]:.3f})"
            )
            state.stopped_early = True
        if target is None:
            return
        assert state.best_file is not None
        self._set_weights(checkpoint.load_best(self.checkpoint_dir, state.best_file, len(self.variables)))
        state.finished = True

    # --- data, state and weights ----------------------------------------------------------------------
    def _prepare(self, data: ArrayDataset, what: str) -> tuple[np.ndarray, np.ndarray]:
        model = self.model
        return prepare(
            data,
            what,
            input_shape=model.input_shape,
            num_classes=model.num_classes,
            input_range=self.options.input_range,
        )

    def _fingerprint(self, train_data: ArrayDataset, val_data: ArrayDataset) -> str:
        options = self.options.model_dump(mode="json", include=set(TrainingOptions.model_fields))
        identity = {
            "model": self.model.sha256,
            "variables": [[v.name, v.shape.as_list()] for v in self.variables],
            "train": train_data.sha256,
            "validation": val_data.sha256,
            "options": options,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _resume(self, fingerprint: str) -> tuple[RunState, bool]:
        found = checkpoint.load(self.checkpoint_dir)
        if found is not None and found.state.fingerprint == fingerprint and self._fits(found):
            self._set_weights(found.weights)
            self.optimizer.restore(found.optimizer)
            if self.previous is not None and found.perturbations is not None:
                self.previous.restore(found.perturbations)
            return found.state, True
        state = RunState(fingerprint)
        if found is not None:
            state.notes.append("a checkpoint of another model, dataset or options was ignored")
        return state, False

    def _fits(self, found: Checkpoint) -> bool:
        shapes = [tuple(v.shape.as_list()) for v in self.variables]
        if [w.shape for w in found.weights] != shapes or len(found.optimizer) != 1 + 2 * len(shapes):
            return False
        return self.previous is None or self.previous.fits(found.perturbations)

    def _check(self, stop: Callable[[], bool], state: RunState) -> None:
        """Checkpoint the position and raise TrainingCancelled when asked to stop."""
        if stop():
            self._save(state)
            raise TrainingCancelled("the training was cancelled")

    def _tick(self, state: RunState) -> float:
        """Add the wall time since the last tick to the run's and the epoch's; returns the run's total."""
        now = time.perf_counter()
        state.seconds += now - self._clock
        state.epoch_seconds += now - self._clock
        self._clock = now
        return state.seconds

    def _save(self, state: RunState) -> None:
        self._tick(state)
        perturbations = None if self.previous is None else self.previous.values
        checkpoint.save(
            self.checkpoint_dir, Checkpoint(state, self._weights(), self.optimizer.state(), perturbations)
        )

    def _weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.variables]

    def _set_weights(self, weights: list[np.ndarray]) -> None:
        for var, value in zip(self.variables, weights, strict=True):
            var.assign(value)


def _versions() -> dict[str, str]:
    import keras

    try:
        parry = metadata.version("parry")
    except metadata.PackageNotFoundError:
        parry = "unknown"
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__, "parry": parry}
