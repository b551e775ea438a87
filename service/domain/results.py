"""What jobs answer, shared by the API, the workers and the CLI: progress, evaluation and training results.

This module imports neither FastAPI nor TensorFlow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.domain.specs import ResultNorm, TrainingMethod


class Progress(BaseModel):
    fraction: float = Field(ge=0, le=1)
    stage: str = ""
    eta_seconds: float | None = None


class Perturbation(BaseModel):
    linf: float
    l2: float


class AttackCost(BaseModel):
    """Gradient work of one attack at one eps: what a bigger job will cost scales with these."""

    forward_passes: int = Field(description="Model forward passes, summed over all samples.")
    backward_passes: int = Field(description="Input-gradient computations, summed over all samples.")
    forward_per_sample: float = Field(description="forward_passes / num_samples.")
    backward_per_sample: float = Field(description="backward_passes / num_samples.")
    queries: int | None = Field(
        default=None,
        description="Samples sent through the model, summed (a black-box attack's budget); "
        "null: equal to forward_passes.",
    )


class StageResult(BaseModel):
    """One stage of an ensemble (`autoattack`) at one eps: what was left robust after it, and its work."""

    name: str = Field(description="The stage's attack, as its label: `apgd-ce-100`, `square`.")
    spec: dict[str, Any]
    num_attacked: int = Field(description="Samples this stage ran on: those every earlier stage left robust.")
    robust_accuracy: float = Field(description="Robust accuracy after this stage and every earlier one.")
    broken: int = Field(description="Samples this stage broke.")
    seconds: float
    cost: AttackCost


class AttackResult(BaseModel):
    name: str
    norm: ResultNorm
    eps: float
    spec: dict[str, Any]
    robust_accuracy: float
    robust_accuracy_ci95: tuple[float, float] | None = Field(
        default=None, description="95% Wilson interval of robust_accuracy for this many samples."
    )
    attack_success_rate: float
    num_attacked: int = Field(description="Samples attacked: those classified correctly when clean.")
    mean_perturbation: Perturbation
    per_class_robust_accuracy: dict[str, float]
    seconds: float
    samples_per_second: float
    cost: AttackCost
    stages: list[StageResult] | None = Field(
        default=None, description="An ensemble's stages in the order they ran (autoattack only)."
    )
    cumulative: bool = Field(
        default=False,
        description="Only the samples that survived this attack at its next smaller eps were attacked "
        "here; the ones broken there count as broken here (autoattack with several eps).",
    )


class WorstCaseResult(BaseModel):
    """A sample counts as robust only if every attack at this (norm, eps) failed on it."""

    norm: ResultNorm
    eps: float
    attacks: list[str]
    robust_accuracy: float
    robust_accuracy_ci95: tuple[float, float] | None = Field(
        default=None, description="95% Wilson interval of robust_accuracy for this many samples."
    )
    per_class_robust_accuracy: dict[str, float]


class CalibrationBin(BaseModel):
    """One bar of the reliability diagram: the clean samples whose confidence lies in (lower, upper]."""

    lower: float
    upper: float
    count: int
    accuracy: float | None = Field(description="Fraction correct in the bin; null when it is empty.")
    confidence: float | None = Field(description="Mean confidence in the bin; null when it is empty.")


class CalibrationResult(BaseModel):
    """How well the clean confidence (the top softmax probability) matches the clean accuracy."""

    ece: float = Field(
        description="Expected calibration error over 15 equal-width confidence bins: the sum over bins of "
        "(bin count / samples) * |accuracy - mean confidence|."
    )
    rms_calibration_error: float = Field(
        description="Root-mean-square calibration error (Hendrycks et al.): bins of 100 samples in "
        "confidence order (the last takes the remainder), sqrt(sum (count / samples) * (accuracy - "
        "confidence)^2)."
    )
    mean_confidence: float
    bins: list[CalibrationBin] = Field(description="The 15 equal-width bins of the ECE, lowest first.")


class ScoreHistogram(BaseModel):
    """Both sets' scores counted over the same equal-width bins (`edges` has one more entry than counts)."""

    edges: list[float]
    in_distribution: list[int]
    out_of_distribution: list[int]


class RocCurve(BaseModel):
    """The ROC curve, thinned to at most a few hundred points (in-distribution is the positive class)."""

    fpr: list[float]
    tpr: list[float]


class OODResult(BaseModel):
    """Out-of-distribution detection by one score; higher scores say in-distribution (the positive class)."""

    score: str = Field(
        description="msp (top softmax probability), max_logit or energy (logsumexp of logits)."
    )
    auroc: float
    aupr_in: float = Field(description="Average precision with in-distribution as the positive class.")
    aupr_out: float = Field(description="Average precision with OOD as the positive class (score negated).")
    fpr_at_95_tpr: float = Field(
        description="Fraction of OOD samples scored at or above the highest threshold that keeps 95% of "
        "the in-distribution samples."
    )
    num_in: int
    num_out: int
    histogram: ScoreHistogram
    roc: RocCurve


class CurvePoint(BaseModel):
    eps: float
    robust_accuracy: float = Field(description="Share of all samples whose minimal norm is above eps.")


class MinimumNormQuantiles(BaseModel):
    """Quantiles of the minimal norms over the samples correct when clean; null means infinite."""

    p10: float | None
    p25: float | None
    p75: float | None
    p90: float | None


class MinimumNormResult(BaseModel):
    """What one minimum-norm attack (`cw`, `fmn`) found: the distribution of per-sample minimal norms.

    A sample wrong when clean has minimal norm 0; one with no adversarial found has an infinite one, so
    a median or quantile over more unbroken samples than its rank is null (infinite).
    """

    name: str
    norm: ResultNorm
    attack: int = Field(description="Index of the attack in the evaluation's `attacks`.")
    spec: dict[str, Any]
    median: float | None = Field(description="Median minimal norm over the clean-correct samples.")
    mean: float | None = Field(
        description="Mean minimal norm over the clean-correct samples an adversarial was found for."
    )
    quantiles: MinimumNormQuantiles
    curve: list[CurvePoint] = Field(
        description="Robust accuracy against eps, ascending in eps, one point per distinct minimal norm "
        "(at most 256, evenly spaced in rank beyond that) from eps 0."
    )
    num_attacked: int = Field(description="Samples searched: those correct when clean.")
    num_found: int = Field(description="Searched samples an adversarial was found for.")
    seconds: float
    cost: AttackCost


class CorruptionItem(BaseModel):
    """Accuracy on every evaluated sample under one corruption at one severity."""

    name: str
    severity: int
    accuracy: float


class CorruptionsResult(BaseModel):
    """Accuracy under common corruptions of the clean samples (docs/corruptions.md)."""

    items: list[CorruptionItem] = Field(description="One per (corruption, severity), in the spec's order.")
    mean_accuracy: float = Field(description="Mean of the items' accuracies.")
    relative_error: float | None = Field(
        description="Mean of (1 - accuracy) over the items divided by (1 - clean accuracy): how many times "
        "the clean error the corruptions cause; null when the clean accuracy is 1 (no clean error to "
        "compare with), where mean_accuracy alone says what corruptions cost."
    )
    skipped: list[str] = Field(
        default_factory=list,
        description="Corruptions of `all` that do not apply to these images (saturate on grayscale).",
    )


class EvaluationResult(BaseModel):
    num_samples: int
    clean_accuracy: float
    per_class_clean_accuracy: dict[str, float] = Field(default_factory=dict)
    attacks: list[AttackResult]
    worst_case: list[WorstCaseResult] = Field(default_factory=list)
    minimum_norm: list[MinimumNormResult] = Field(
        default_factory=list, description="One entry per minimum-norm attack, in the spec's order."
    )
    warnings: list[str] = Field(default_factory=list)
    cost: AttackCost | None = None
    calibration: CalibrationResult | None = Field(
        default=None, description="On the clean data (results before calibration have none)."
    )
    ood: list[OODResult] | None = Field(default=None, description="One entry per score when `ood` was set.")
    model_sha256: str
    dataset_sha256: str
    ood_dataset_sha256: str | None = None
    seed: int
    input_range: tuple[float, float] = (0.0, 1.0)
    seconds: float = 0.0
    versions: dict[str, str] = Field(default_factory=dict)
    corruptions: CorruptionsResult | None = Field(
        default=None, description="Accuracy under common corruptions, when the spec asked for them."
    )


class EpochRecord(BaseModel):
    """One epoch of adversarial training; accuracies are on the validation samples."""

    epoch: int = Field(description="1-based.")
    loss: float = Field(description="Mean training loss over the epoch's batches.")
    train_accuracy: float = Field(description="Accuracy on the epoch's training inputs (adversarial ones).")
    clean_accuracy: float
    robust_accuracy: float = Field(description="Under PGD (validation_steps) at the full training eps.")
    eps: float = Field(description="Training eps at the end of the epoch (below the target during the ramp).")
    learning_rate: float = Field(description="Learning rate of the epoch's last batch.")
    seconds: float


class ValidationCheck(BaseModel):
    """A model on the per-epoch validation check (clean and PGD accuracy at the training eps)."""

    clean_accuracy: float
    robust_accuracy: float


class TrainingResult(BaseModel):
    method: TrainingMethod
    history: list[EpochRecord]
    best_epoch: int | None = Field(description="The epoch whose weights were exported (1-based).")
    epochs_completed: int
    stopped_early: bool = False
    rolled_back: bool = False
    notes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list,
        description="Reasons to distrust the trained model: its data used little of input_range, or it is "
        "worse than the uploaded model on both accuracies.",
    )
    uploaded: ValidationCheck | None = Field(
        default=None, description="The uploaded model (epoch 0) on the same validation check as each epoch."
    )
    before: EvaluationResult | None = None
    after: EvaluationResult | None = None
    num_train_samples: int
    num_validation_samples: int
    seconds: float = Field(description="Wall time of all runs of this job, resumed ones included.")
    resumed: bool = Field(default=False, description="This run continued from a checkpoint.")
    model_sha256: str
    train_dataset_sha256: str
    validation_dataset_sha256: str
    seed: int
    model_id: str | None = Field(default=None, description="The registered robustified model.")
    versions: dict[str, str] = Field(default_factory=dict)
