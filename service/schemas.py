"""Pydantic schemas shared by the API and the workers: attack specs, evaluation specs, results.

This module imports neither FastAPI nor TensorFlow: workers and the CLI use it too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Norm = Literal["linf", "l2"]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Spec(BaseModel):
    # Unknown fields are a 422: a typo such as `stpes` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class _AttackSpecBase(_Spec):
    eps: NonNegative | list[NonNegative] = Field(
        description="Perturbation budget in the attack's norm; a list gives one result per value."
    )
    norm: Norm = "linf"
    targeted: bool = False
    target: int | None = Field(
        default=None,
        ge=0,
        description="Target class of a targeted attack; null picks a seeded random class other than the label.",
    )

    @field_validator("eps")
    @classmethod
    def _eps_not_empty(cls, value: float | list[float]) -> float | list[float]:
        if isinstance(value, list) and not value:
            raise ValueError("eps must be a number or a non-empty list of numbers")
        return value

    @model_validator(mode="after")
    def _target_needs_targeted(self) -> _AttackSpecBase:
        if self.target is not None and not self.targeted:
            raise ValueError("target is only meaningful with targeted: true")
        return self

    def eps_values(self) -> list[float]:
        return list(self.eps) if isinstance(self.eps, list) else [self.eps]


class FGSMSpec(_AttackSpecBase):
    """Fast Gradient Sign Method (Goodfellow et al., 2015); L2 variant steps along the normalised gradient."""

    name: Literal["fgsm"] = "fgsm"


class PGDSpec(_AttackSpecBase):
    """Projected Gradient Descent (Madry et al., 2018) in L-inf or L2."""

    name: Literal["pgd"] = "pgd"
    steps: int = Field(default=40, ge=1, le=10_000)
    step_size: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Default: 2.5 * eps / steps."
    )
    random_start: bool = True
    restarts: int = Field(default=1, ge=1, le=100)
    loss: Literal["ce", "cw"] = "ce"

    def step_size_for(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else 2.5 * eps / self.steps


AttackSpec = Annotated[FGSMSpec | PGDSpec, Field(discriminator="name")]


class EvaluationOptions(_Spec):
    """What an evaluation does, independent of where the model and the data come from."""

    attacks: list[AttackSpec] = Field(min_length=1, max_length=64)
    input_range: tuple[float, float] = (0.0, 1.0)
    max_samples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("input_range")
    @classmethod
    def _range_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not lo < hi:
            raise ValueError("input_range must be [low, high] with low < high")
        return value


class EvaluationSpec(EvaluationOptions):
    """Body of `POST /v1/evaluations`."""

    model_id: str = Field(min_length=1, max_length=200)
    dataset_id: str = Field(min_length=1, max_length=200)
    callback_url: str | None = Field(default=None, max_length=2000)


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


class AttackResult(BaseModel):
    name: str
    norm: Norm
    eps: float
    spec: dict[str, Any]
    robust_accuracy: float
    attack_success_rate: float
    num_attacked: int = Field(description="Samples attacked: those classified correctly when clean.")
    mean_perturbation: Perturbation
    per_class_robust_accuracy: dict[str, float]
    seconds: float
    samples_per_second: float
    cost: AttackCost


class WorstCaseResult(BaseModel):
    """A sample counts as robust only if every attack at this (norm, eps) failed on it."""

    norm: Norm
    eps: float
    attacks: list[str]
    robust_accuracy: float
    per_class_robust_accuracy: dict[str, float]


class EvaluationResult(BaseModel):
    num_samples: int
    clean_accuracy: float
    per_class_clean_accuracy: dict[str, float] = Field(default_factory=dict)
    attacks: list[AttackResult]
    worst_case: list[WorstCaseResult] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    cost: AttackCost | None = None
    model_sha256: str
    dataset_sha256: str
    seed: int
    input_range: tuple[float, float] = (0.0, 1.0)
    seconds: float = 0.0
    versions: dict[str, str] = Field(default_factory=dict)
