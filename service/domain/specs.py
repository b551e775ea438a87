"""What users ask for, shared by the API, the workers and the CLI: attack, evaluation and training specs.

Their results are in `results.py`.

This module imports neither FastAPI nor TensorFlow: workers and the CLI use it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.domain.corruptions import CORRUPTION_NAMES, SEVERITIES, names_for, unknown_names
from service.domain.metric_paths import OOD_SCORE_NAMES, MetricPath, parse_metric

Norm = Literal["linf", "l2"]
# The norms a result row may carry: the bounded attacks' plus L1, which only `fmn` runs in.
ResultNorm = Literal["linf", "l2", "l1"]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    lo, hi = value
    if not lo < hi:
        raise ValueError("input_range must be [low, high] with low < high")
    return value


# The range a model's inputs live in: [low, high] with low < high.
InputRange = Annotated[tuple[float, float], AfterValidator(_ordered)]


class _Spec(BaseModel):
    # Unknown fields are a 422: a typo such as `stpes` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class AttackSpecBase(_Spec):
    """What every attack spec has: eps, norm, targeting, plus its cost estimate and its label."""

    name: str  # each attack narrows it to its Literal name, the union's discriminator
    # True for the attacks that find each sample's smallest adversarial in one run (MinimumNormSpec).
    minimum_norm: ClassVar[bool] = False
    eps: NonNegative | list[NonNegative] = Field(
        description="Perturbation budget in the attack's norm; a list gives one result per value."
    )
    norm: Norm = "linf"
    targeted: bool = False
    target: int | None = Field(
        default=None,
        ge=0,
        description="Target class of a targeted attack; null: a seeded random class other than the label.",
    )

    @field_validator("eps")
    @classmethod
    def _eps_not_empty(cls, value: float | list[float]) -> float | list[float]:
        if isinstance(value, list) and not value:
            raise ValueError("eps must be a number or a non-empty list of numbers")
        return value

    @model_validator(mode="after")
    def _target_needs_targeted(self) -> AttackSpecBase:
        if self.target is not None and not self.targeted:
            raise ValueError("target is only meaningful with targeted: true")
        return self

    def eps_values(self) -> list[float]:
        return list(self.eps) if isinstance(self.eps, list) else [self.eps]

    def gradient_steps(self) -> int:
        """Forward+backward passes per sample at one eps, at most (the job-size cap counts these)."""
        return 1

    def planned_steps(self) -> int:
        """Forward+backward passes per sample over every eps of the attack, at most."""
        return self.gradient_steps() * len(self.eps_values())

    def label(self) -> str:
        """A short name that tells the attacks of one report apart: `pgd-40×5 cw`, `apgd-ce-100`."""
        return self.label_of(self.model_dump())

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        """The label from a spec as a report row stores it (fields missing take their defaults)."""
        name = str(cls.model_fields["name"].default)
        return name + (" (targeted)" if fields.get("targeted") else "")

    @classmethod
    def _default(cls, fields: Mapping[str, Any], key: str) -> Any:
        value = fields.get(key)
        return cls.model_fields[key].default if value is None else value


class FGSMSpec(AttackSpecBase):
    """Fast Gradient Sign Method (Goodfellow et al., 2015); L2 variant steps along the normalised gradient."""

    name: Literal["fgsm"] = "fgsm"


class PGDSpec(AttackSpecBase):
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

    def gradient_steps(self) -> int:
        return self.steps * self.restarts

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        label = f"pgd-{cls._default(fields, 'steps')}"
        restarts = int(cls._default(fields, "restarts"))
        if restarts > 1:
            label += f"×{restarts}"
        if fields.get("loss") == "cw":
            label += " cw"
        return label + (" (targeted)" if fields.get("targeted") else "")


class _APGDSpec(AttackSpecBase):
    """Auto-PGD (Croce & Hein, 2020): PGD with momentum and a step size that halves at checkpoints."""

    steps: int = Field(default=100, ge=1, le=10_000, description="Gradient steps per restart.")
    restarts: int = Field(default=1, ge=1, le=100, description="Random starts; each sample keeps its worst.")
    eot_iter: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Expectation over Transformation: gradients averaged over this many draws per step, "
        "for stochastic models (AutoAttack's rand version uses 20); each draw is a forward+backward pass.",
    )

    def gradient_steps(self) -> int:
        return self.steps * self.restarts * self.eot_iter

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        label = f"{cls.model_fields['name'].default}-{cls._default(fields, 'steps')}"
        restarts = int(cls._default(fields, "restarts"))
        if restarts > 1:
            label += f"×{restarts}"
        eot = int(cls._default(fields, "eot_iter"))
        if eot > 1:
            label += f" eot{eot}"
        return label + (" (targeted)" if fields.get("targeted") else "")


class _UntargetedSpec(AttackSpecBase):
    """An attack that answers the untargeted question only (it may pick targets of its own)."""

    untargeted_reason: ClassVar[str]

    @model_validator(mode="after")
    def _untargeted(self) -> _UntargetedSpec:
        if self.targeted:
            raise ValueError(f"{self.name} is untargeted only: {self.untargeted_reason}")
        return self


# AutoAttack's default for APGD-T and FAB-T; capped at the model's classes - 1 when the attack runs.
DEFAULT_TARGET_CLASSES = 9
TARGET_CLASSES = Field(
    default=DEFAULT_TARGET_CLASSES,
    ge=1,
    le=1000,
    description="Classes of highest clean logit (other than the label) tried as targets, one full run "
    "each on the samples still robust; capped at the model's classes - 1.",
)


class APGDCESpec(_APGDSpec):
    """APGD on the cross-entropy (Croce & Hein, 2020), in L-inf or L2."""

    name: Literal["apgd-ce"] = "apgd-ce"


class APGDDLRSpec(_APGDSpec):
    """APGD on the Difference of Logits Ratio loss (Croce & Hein, 2020): untargeted, 3 classes or more."""

    name: Literal["apgd-dlr"] = "apgd-dlr"

    @model_validator(mode="after")
    def _untargeted(self) -> APGDDLRSpec:
        if self.targeted:
            raise ValueError(
                "apgd-dlr is untargeted only (the targeted DLR loss is not implemented); "
                "use apgd-ce with targeted: true"
            )
        return self


class APGDTSpec(_APGDSpec, _UntargetedSpec):
    """Targeted APGD on the targeted DLR loss over the top-k classes (Croce & Hein, 2020): a success is any
    class but the label; 3 classes or more."""

    name: Literal["apgd-t"] = "apgd-t"
    untargeted_reason: ClassVar[str] = (
        "it runs one targeted attack per top class itself (n_target_classes) and counts any wrong class"
    )
    n_target_classes: int = TARGET_CLASSES

    def gradient_steps(self) -> int:
        return super().gradient_steps() * self.n_target_classes

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        label = super().label_of(fields)
        targets = int(cls._default(fields, "n_target_classes"))
        return label if targets == DEFAULT_TARGET_CLASSES else f"{label} top{targets}"


class FABTSpec(_UntargetedSpec):
    """Targeted FAB (Croce & Hein, 2020, fast adaptive boundary attack) over the top-k classes, in L-inf or
    L2: minimally distorted adversarials, of which those inside eps count."""

    name: Literal["fab-t"] = "fab-t"
    untargeted_reason: ClassVar[str] = (
        "it runs one targeted attack per top class itself (n_target_classes) and counts any wrong class"
    )
    steps: int = Field(default=100, ge=1, le=10_000, description="Iterations per target class and restart.")
    n_target_classes: int = TARGET_CLASSES
    restarts: int = Field(
        default=1, ge=1, le=100, description="Starts per target class; the first from the clean input."
    )
    alpha_max: float = Field(
        default=0.1, ge=0, le=1, description="Largest weight of the step from the input."
    )
    eta: float = Field(default=1.05, ge=1, le=10, allow_inf_nan=False, description="Overshoot of each step.")
    beta: float = Field(
        default=0.9, gt=0, lt=1, description="Backward step towards the input after a success."
    )

    def gradient_steps(self) -> int:
        return self.steps * self.n_target_classes * self.restarts

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        label = f"fab-t-{cls._default(fields, 'steps')}"
        restarts = int(cls._default(fields, "restarts"))
        if restarts > 1:
            label += f"×{restarts}"
        targets = int(cls._default(fields, "n_target_classes"))
        return label if targets == DEFAULT_TARGET_CLASSES else f"{label} top{targets}"


# A forward pass costs about a third of a forward+backward pass (the backward pass is about twice the
# forward), so a score-based attack's queries count as gradient steps at that rate in the job-size cap.
# Measured with bench/strong.py (small CNN, batch 250, 2 cores): 0.296 ms against 0.103 ms per sample on
# a quiet machine (2.9x), 1.51 ms against 0.63 ms under a load of 9 (2.4x).
QUERIES_PER_GRADIENT_STEP = 3


class SquareSpec(_UntargetedSpec):
    """Square Attack (Andriushchenko et al., 2020): score-based black box on the logit margin, in L-inf or
    L2; it uses the model's outputs only, no gradient."""

    name: Literal["square"] = "square"
    untargeted_reason: ClassVar[str] = "the margin loss it implements is the untargeted one"
    n_queries: int = Field(
        default=5000, ge=1, le=100_000, description="Model queries per sample and restart (AutoAttack: 5000)."
    )
    p_init: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Initial fraction of the image a square covers (then halved on the published schedule).",
    )
    restarts: int = Field(default=1, ge=1, le=100)

    def gradient_steps(self) -> int:
        return math.ceil(self.n_queries * self.restarts / QUERIES_PER_GRADIENT_STEP)

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        label = f"square-{cls._default(fields, 'n_queries')}"
        restarts = int(cls._default(fields, "restarts"))
        return label + (f"×{restarts}" if restarts > 1 else "")


class MinimumNormSpec(AttackSpecBase):
    """A minimum-norm attack: one run finds each sample's smallest adversarial, whatever the eps.

    Its eps values are optional: each gives a row (robust = no adversarial of norm eps or less found),
    and without any the result has only the attack's `minimum_norm` entry. Untargeted only.
    """

    minimum_norm: ClassVar[bool] = True
    eps: NonNegative | list[NonNegative] | None = Field(  # type: ignore[assignment]
        default=None,
        description="Optional: budgets at which to report robust accuracy from the minimal norms.",
    )

    @model_validator(mode="after")
    def _untargeted(self) -> MinimumNormSpec:
        if self.targeted:
            raise ValueError(f"{self.name} is untargeted only: it looks for the nearest wrong class")
        return self

    def eps_values(self) -> list[float]:
        return [] if self.eps is None else super().eps_values()

    def planned_steps(self) -> int:
        return self.gradient_steps()  # one run answers every eps


class CWSpec(MinimumNormSpec):
    """Carlini & Wagner's L2 attack (2017): Adam in tanh space on the f6 margin with confidence kappa, and
    a binary search over the constant c per sample; each sample keeps its smallest adversarial."""

    name: Literal["cw"] = "cw"
    norm: Literal["l2"] = "l2"
    binary_search_steps: int = Field(default=9, ge=1, le=50, description="Searches over c per sample.")
    steps: int = Field(default=1000, ge=1, le=100_000, description="Adam steps per search.")
    confidence: float = Field(
        default=0.0, ge=0, le=1000, allow_inf_nan=False, description="Kappa: the logit margin required."
    )
    learning_rate: float = Field(default=0.01, gt=0, le=10, allow_inf_nan=False, description="Adam's.")
    initial_const: float = Field(
        default=1e-3, gt=0, le=1e6, allow_inf_nan=False, description="c of the first search."
    )
    abort_early: bool = Field(
        default=True,
        description="End a sample's search when its loss has not fallen by 0.01% over a tenth of the steps.",
    )

    def gradient_steps(self) -> int:
        return self.binary_search_steps * self.steps

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        searches, steps = cls._default(fields, "binary_search_steps"), cls._default(fields, "steps")
        label = f"cw-{searches}×{steps}"
        kappa = float(cls._default(fields, "confidence"))
        return label + (f" κ={kappa:g}" if kappa else "")


class FMNSpec(MinimumNormSpec):
    """Fast Minimum-Norm (Pintor et al., 2021) in L-inf, L2 or L1: normalised gradient steps inside a
    ball whose radius shrinks after each adversarial iterate and grows after each other one."""

    name: Literal["fmn"] = "fmn"
    norm: ResultNorm = "linf"  # type: ignore[assignment]
    steps: int = Field(default=200, ge=1, le=100_000, description="Iterations (one gradient each).")
    alpha_init: float = Field(
        default=1.0, gt=0, le=100, allow_inf_nan=False, description="First step size (L2 length)."
    )
    alpha_final: float | None = Field(
        default=None, gt=0, le=100, allow_inf_nan=False, description="Last step size; default alpha_init/100."
    )
    gamma_init: float = Field(
        default=0.05, gt=0, lt=1, description="First relative change of the radius per step."
    )
    gamma_final: float = Field(default=0.001, gt=0, lt=1, description="Last relative change of the radius.")

    def gradient_steps(self) -> int:
        return self.steps

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        return f"fmn-{cls._default(fields, 'steps')}"


AutoAttackVersion = Literal["standard", "fast", "rand"]

# AutoAttack's versions as data: each stage is an attack spec's fields (the ensemble adds its eps and norm),
# run in this order, each only on the samples every earlier stage left robust (Croce & Hein, 2020).
AUTOATTACK_STAGES: dict[str, tuple[dict[str, Any], ...]] = {
    "standard": (
        {"name": "apgd-ce", "steps": 100},
        {"name": "apgd-t", "steps": 100, "n_target_classes": 9},
        {"name": "fab-t", "steps": 100, "n_target_classes": 9},
        {"name": "square", "n_queries": 5000},
    ),
    "fast": (
        {"name": "apgd-ce", "steps": 100},
        {"name": "apgd-t", "steps": 100, "n_target_classes": 9},
    ),
    # For stochastic models: gradients averaged over 20 draws (expectation over transformation).
    "rand": (
        {"name": "apgd-ce", "steps": 100, "eot_iter": 20},
        {"name": "apgd-dlr", "steps": 100, "eot_iter": 20},
    ),
}


class AutoAttackSpec(AttackSpecBase):
    """AutoAttack (Croce & Hein, 2020): an ensemble of attacks, each run on what the earlier ones left.

    standard: APGD-CE, APGD-T, FAB-T, Square (5,000 queries); fast: APGD-CE, APGD-T; rand (stochastic
    models): APGD-CE and APGD-DLR with gradients averaged over 20 draws. With several eps, each larger
    eps attacks only the samples that survived the smaller one, so its row is cumulative.
    """

    name: Literal["autoattack"] = "autoattack"
    version: AutoAttackVersion = Field(default="standard", description="standard, fast or rand.")

    @model_validator(mode="after")
    def _untargeted_and_available(self) -> AutoAttackSpec:
        if self.targeted:
            raise ValueError("autoattack is untargeted (its targeted stages pick their own targets)")
        eps = self.eps_values()
        if eps != sorted(eps):
            raise ValueError(
                "autoattack's eps list must be in increasing order: each eps attacks only the samples "
                "that survived the one before"
            )
        if self.version not in available_autoattack_versions():
            raise ValueError(
                f"autoattack version {self.version} needs attacks this server does not have; versions "
                f"available: {', '.join(available_autoattack_versions()) or 'none'}"
            )
        return self

    def stages(self) -> list[AttackSpecBase]:
        """The stage specs in order, at this ensemble's eps and norm."""
        return [
            ATTACK_SPECS[fields["name"]].model_validate({**fields, "eps": self.eps, "norm": self.norm})
            for fields in AUTOATTACK_STAGES[self.version]
        ]

    def gradient_steps(self) -> int:
        # Every stage on every sample: the most the ensemble can do (it drops broken samples as it goes).
        return sum(stage.gradient_steps() for stage in self.stages())

    @classmethod
    def label_of(cls, fields: Mapping[str, Any]) -> str:
        return f"autoattack {cls._default(fields, 'version')}"


def available_autoattack_versions() -> list[str]:
    """The versions whose every stage this server has, with every option the version sets."""
    versions = []
    for version, stages in AUTOATTACK_STAGES.items():
        try:
            for fields in stages:
                ATTACK_SPECS[fields["name"]].model_validate({**fields, "eps": 0.0})
        except (KeyError, ValueError):  # pydantic's ValidationError is a ValueError
            continue
        versions.append(version)
    return versions


# Adding an attack: its spec class above, and one entry in this union.
AttackSpecUnion = (
    FGSMSpec
    | PGDSpec
    | APGDCESpec
    | APGDDLRSpec
    | APGDTSpec
    | FABTSpec
    | SquareSpec
    | AutoAttackSpec
    | CWSpec
    | FMNSpec
)
AttackSpec = Annotated[AttackSpecUnion, Field(discriminator="name")]
ATTACK_SPECS: dict[str, type[AttackSpecBase]] = {
    str(spec.model_fields["name"].default): spec for spec in get_args(AttackSpecUnion)
}
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACK_SPECS)
# Attacks made of other attacks: the engine runs their stages (workers/evaluation/ensemble.py), so the
# worker's attack registry holds the others only.
ENSEMBLE_NAMES: tuple[str, ...] = ("autoattack",)


OODScore = Literal["msp", "max_logit", "energy"]
OOD_SCORES: tuple[str, ...] = get_args(OODScore)
assert OOD_SCORES == OOD_SCORE_NAMES  # metric paths spell them out (standard library only)


def _all_scores() -> list[OODScore]:
    return ["msp", "max_logit", "energy"]


class OODSpec(_Spec):
    """Out-of-distribution detection: how well per-sample scores tell the evaluation's data from another set.

    Scores (higher means in-distribution): msp, the top softmax probability (Hendrycks & Gimpel, 2017);
    max_logit, the top logit (Hendrycks et al., 2022); energy, the logsumexp of the logits, the negative
    free energy (Liu et al., 2020). The OOD set's labels are ignored and may be absent.
    """

    dataset_id: str = Field(min_length=1, max_length=200, description="The out-of-distribution samples.")
    scores: list[OODScore] = Field(default_factory=_all_scores, min_length=1, max_length=3)

    @field_validator("scores")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each OOD score may be named once")
        return value


def attack_free_measures(fields: Mapping[str, Any]) -> list[str]:
    """What an evaluation measures besides attacks, from its (validated) fields; with at least one,
    `attacks` may be empty. Those fields come before `attacks` in EvaluationOptions, so that its
    validator sees them."""
    return [name for name in ("ood", "corruptions") if fields.get(name) is not None]


class CorruptionsSpec(_Spec):
    """Common corruptions (ImageNet-C / CIFAR-10-C) of the clean samples, and the accuracy on each.

    docs/corruptions.md lists each corruption's parameters per severity.
    """

    names: Literal["all"] | list[str] = Field(
        default="all",
        description="Corruption names, or all (saturate only for colour images). Known: "
        + ", ".join(CORRUPTION_NAMES)
        + ".",
    )
    severities: list[int] = Field(
        default_factory=lambda: list(SEVERITIES), description="Severities, each 1 to 5."
    )

    @field_validator("names")
    @classmethod
    def _known_names(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            return value
        if not value:
            raise ValueError("names must be all or a non-empty list of corruption names")
        unknown = unknown_names(value)
        if unknown:
            raise ValueError(f"unknown corruption {', '.join(unknown)}; known: {', '.join(CORRUPTION_NAMES)}")
        return list(dict.fromkeys(value))

    @field_validator("severities")
    @classmethod
    def _known_severities(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("severities must be a non-empty list of integers from 1 to 5")
        outside = [s for s in value if s not in SEVERITIES]
        if outside:
            raise ValueError(f"severity {outside[0]} is outside 1 to 5")
        return sorted(set(value))

    def selected(self, *, channels: int) -> list[str]:
        """The corruptions to run on images of `channels` channels: all of them skips saturate on grey."""
        if self.names == "all":
            return names_for(list(CORRUPTION_NAMES), channels=channels)
        return list(self.names)

    def most_items(self) -> int:
        """(corruption, severity) pairs at most, whatever the images' channels (the job-size cap)."""
        count = len(CORRUPTION_NAMES) if self.names == "all" else len(self.names)
        return count * len(self.severities)


class EvaluationOptions(_Spec):
    """What an evaluation does, independent of where the model and the data come from."""

    ood: OODSpec | None = Field(default=None, description="Out-of-distribution detection against a dataset.")
    corruptions: CorruptionsSpec | None = Field(
        default=None,
        description="Accuracy on common corruptions of the clean samples (result.corruptions); null: none.",
    )
    attacks: list[AttackSpec] = Field(
        default_factory=list,
        max_length=64,
        validate_default=True,  # an absent list must meet the same rule as an empty one
        description="At least one, unless the evaluation measures something else (ood, corruptions).",
    )
    input_range: InputRange = (0.0, 1.0)
    max_samples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("attacks")
    @classmethod
    def _has_work(cls, value: list[AttackSpecBase], info: ValidationInfo) -> list[AttackSpecBase]:
        if not value and not attack_free_measures(info.data):
            raise ValueError(
                "an evaluation needs at least one attack, or ood or corruptions to measure "
                "out-of-distribution detection or corruption accuracy without attacks"
            )
        return value


class Threshold(_Spec):
    """A pass/fail bar (what `parry check` sets); it changes no result. Two forms:

    - on one attack's robust accuracy: `attack` (its index), optionally `eps`, and `min_robust_accuracy`;
    - on any metric path (service/domain/metric_paths.py): `metric`, and `min` and/or `max`, e.g.
      `{"metric": "worst_case.linf.0.3", "min": 0.8}`. A worst-case bar is its own check: it never
      replaces a bar on an attack.
    """

    attack: int | None = Field(default=None, ge=0, description="Index of the attack in `attacks`.")
    eps: float | None = Field(default=None, description="One eps of that attack; null: each of its eps.")
    min_robust_accuracy: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    metric: str | None = Field(
        default=None,
        max_length=200,
        description="A metric path: clean_accuracy, worst_case.<norm>.<eps>, attacks.<index>.<eps>, "
        "corruptions.mean_accuracy, corruptions.<name>.<severity>, ood.<score>.<figure>, "
        "calibration.<figure> or minimum_norm.<attack>.<norm>.<statistic> (median, mean, p10, p25, p75, "
        "p90).",
    )
    min: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="metric >= min; at most 1 except on a minimum_norm.* metric (a norm).",
    )
    max: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="metric <= max; at most 1 except on a minimum_norm.* metric (a norm).",
    )
    use_lower_bound: bool = Field(
        default=False,
        description="The lower bound of the 95% (Wilson) interval, not the estimate, must clear the bar "
        "(with `max`: the upper bound must stay under it).",
    )
    name: str | None = Field(default=None, max_length=200, description="The check's name in reports.")

    @model_validator(mode="after")
    def _one_form(self) -> Threshold:
        if self.metric is None:
            if self.attack is None or self.min_robust_accuracy is None:
                raise ValueError(
                    "a threshold needs attack and min_robust_accuracy, or metric with min or max"
                )
            if self.min is not None or self.max is not None:
                raise ValueError("min and max go with metric; an attack's bar is min_robust_accuracy")
            return self
        if self.attack is not None or self.eps is not None or self.min_robust_accuracy is not None:
            raise ValueError("a metric threshold names its value in the path: drop attack, eps and "
                             "min_robust_accuracy")  # fmt: skip
        if self.min is None and self.max is None:
            raise ValueError(f"threshold on {self.metric} needs min or max")
        path = parse_metric(self.metric)  # MetricPathError is a ValueError: a 422 with its sentence
        too_big = [f"{key} {bar:g}" for key, bar in (("min", self.min), ("max", self.max)) if (bar or 0) > 1]
        if too_big and not path.is_norm:
            raise ValueError(
                f"threshold on {path}: {', '.join(too_big)} is above 1, but {path} is an accuracy in [0, 1] "
                "(write 0.8 for 80%); only minimum_norm.* metrics, which are norms, take values above 1"
            )
        return self

    def path(self) -> MetricPath | None:
        return parse_metric(self.metric) if self.metric is not None else None


class EvaluationSpec(EvaluationOptions):
    """Body of `POST /v1/evaluations`."""

    model_id: str = Field(min_length=1, max_length=200)
    dataset_id: str = Field(min_length=1, max_length=200)
    callback_url: str | None = Field(default=None, max_length=2000)
    no_cache: bool = Field(
        default=False,
        description="Run even when the same model bytes, data, attacks and seed already have a result.",
    )
    thresholds: list[Threshold] = Field(
        default_factory=list,
        max_length=1000,
        description="Pass/fail bars the junit and markdown reports judge the result against.",
    )

    def options(self) -> EvaluationOptions:
        """What the engine runs: the evaluation without its ids, callback and reporting fields."""
        return EvaluationOptions.model_validate(self.model_dump(include=set(EvaluationOptions.model_fields)))

    @model_validator(mode="after")
    def _thresholds_name_attacks(self) -> EvaluationSpec:
        for threshold in self.thresholds:
            path = threshold.path()
            if path is not None:
                self._check_metric(path)
                continue
            assert threshold.attack is not None  # the threshold's own validator holds it
            if threshold.attack >= len(self.attacks):
                raise ValueError(
                    f"threshold for attack {threshold.attack}, but there are only {len(self.attacks)} attacks"
                )
            if threshold.eps is not None and threshold.eps not in self.attacks[threshold.attack].eps_values():
                raise ValueError(
                    f"threshold for eps {threshold.eps:g}, which attack {threshold.attack} does not run"
                )
        return self

    def _check_metric(self, path: MetricPath) -> None:
        """A metric threshold must name a value this evaluation will report."""
        if path.kind == "corruptions":
            if self.corruptions is None:
                raise ValueError(
                    f"threshold on {path}, but this evaluation has no corruptions; add corruptions"
                )
            names = self.corruptions.names
            if path.corruption is not None and names != "all" and path.corruption not in names:
                raise ValueError(f"threshold on {path}, but corruptions has names {', '.join(names)}")
            if path.severity is not None and path.severity not in self.corruptions.severities:
                have = ", ".join(map(str, self.corruptions.severities))
                raise ValueError(f"threshold on {path}, but corruptions has severities {have}")
        elif path.kind == "worst_case":
            runs = sorted({(a.norm, e) for a in self.attacks for e in a.eps_values()})
            if not any(norm == path.norm and path.matches_eps(eps) for norm, eps in runs):
                have = ", ".join(f"worst_case.{norm}.{eps:g}" for norm, eps in runs)
                raise ValueError(f"threshold on {path}, but no attack runs there; this evaluation has {have}")
        elif path.kind == "ood":
            scores = [] if self.ood is None else self.ood.scores
            if path.score not in scores:
                have = ", ".join(scores) or "none: set ood"
                raise ValueError(
                    f"threshold on {path}, but this evaluation has no {path.score} OOD score ({have})"
                )
        elif path.kind == "minimum_norm":
            searches = [a for a in self.attacks if a.minimum_norm]
            if not any(a.name == path.attack_name and a.norm == path.norm for a in searches):
                have = (
                    ", ".join(f"minimum_norm.{a.name}.{a.norm}" for a in searches) or "no minimum-norm attack"
                )
                raise ValueError(f"threshold on {path}, but no such attack runs; this evaluation has {have}")
        elif path.kind == "attacks":
            assert path.attack is not None
            if path.attack >= len(self.attacks):
                raise ValueError(f"threshold on {path}, but there are only {len(self.attacks)} attacks")
            if not any(path.matches_eps(e) for e in self.attacks[path.attack].eps_values()):
                raise ValueError(f"threshold on {path}, an eps attack {path.attack} does not run")


# Adversarial training

TrainingMethod = Literal["pgd", "fgsm-rs", "trades"]
LearningRateSchedule = Literal["constant", "cosine", "onecycle"]
FgsmStart = Literal["random", "previous"]


class TrainingOptions(_Spec):
    """What an adversarial training does, independent of where the model and the data come from."""

    method: TrainingMethod = Field(
        description="pgd (Madry et al.), fgsm-rs (FGSM from a random start, Wong et al.) "
        "or trades (Zhang et al.)."
    )
    eps: float = Field(gt=0, allow_inf_nan=False, description="Training perturbation budget in `norm`.")
    norm: Norm = "linf"
    steps: int = Field(default=10, ge=1, le=200, description="Inner attack steps (pgd, trades).")
    step_size: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Inner step at full eps; default 1.25*eps for fgsm-rs (0.5*eps with fgsm_start "
        "previous), 2.5*eps/steps otherwise. It shrinks with eps during the ramp-up.",
    )
    fgsm_start: FgsmStart = Field(
        default="random",
        description="fgsm-rs only: where each sample's FGSM step starts. random: uniform in the eps ball "
        "(Wong et al.). previous: where that sample's perturbation ended in the previous epoch (the first "
        "epoch starts at random), so the single steps add up across epochs like PGD steps (prior-guided "
        "starts, as in Zheng et al.'s ATTA and Jia et al.'s FGSM-PGI); same cost per step, but one "
        "perturbation per training sample is kept in memory and in checkpoints.",
    )
    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0, le=10, allow_inf_nan=False, description="Adam's.")
    lr_schedule: LearningRateSchedule = Field(
        default="constant",
        description="constant, cosine decay to 0, or onecycle (linear up to learning_rate, then down to 0); "
        "onecycle with learning_rate 0.005 is the recipe Wong et al. pair with fgsm-rs.",
    )
    eps_ramp_epochs: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="Epochs over which the training eps rises linearly from 0; default a third of `epochs`.",
    )
    beta: float = Field(
        default=6.0, ge=0, le=1000, allow_inf_nan=False, description="TRADES weight of the KL term."
    )
    clean_fraction: float = Field(
        default=0.0, ge=0, le=1, description="pgd only: fraction of each batch trained on clean examples."
    )
    early_stop_patience: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Stop after this many epochs without a better robust accuracy.",
    )
    overfit_guard: bool | None = Field(
        default=None,
        description="Roll back to the best epoch and stop when validation PGD accuracy collapses; "
        "default on for fgsm-rs only.",
    )
    validation_steps: int = Field(default=10, ge=1, le=200, description="PGD steps of the per-epoch check.")
    validation_samples: int | None = Field(
        default=1000, ge=1, description="Validation samples checked each epoch; null for all."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    input_range: InputRange = (0.0, 1.0)
    evaluate: list[AttackSpec] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _method_options(self) -> TrainingOptions:
        if self.clean_fraction > 0 and self.method != "pgd":
            raise ValueError("clean_fraction is only used by method pgd")
        if self.fgsm_start != "random" and self.method != "fgsm-rs":
            raise ValueError("fgsm_start is only used by method fgsm-rs")
        if self.clean_fraction >= 1:
            raise ValueError(
                "clean_fraction must be below 1: a batch of clean examples only is not adversarial"
            )
        return self

    def ramp_epochs(self) -> float:
        return self.eps_ramp_epochs if self.eps_ramp_epochs is not None else self.epochs / 3

    def guard_enabled(self) -> bool:
        return self.overfit_guard if self.overfit_guard is not None else self.method == "fgsm-rs"

    def step_size_at_full_eps(self) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.method != "fgsm-rs":
            return 2.5 * self.eps / self.steps
        # Measured on mnist-5k at eps 0.3 (bench/README.md): from the previous perturbation, half-eps
        # steps beat Wong et al.'s 1.25*eps, which suits a start drawn afresh at random.
        return 0.5 * self.eps if self.fgsm_start == "previous" else 1.25 * self.eps


class TrainingSpec(TrainingOptions):
    """Body of `POST /v1/trainings`."""

    model_id: str = Field(min_length=1, max_length=200)
    dataset_id: str = Field(min_length=1, max_length=200)
    validation_dataset_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Default: 10% of the training data, held out."
    )
    callback_url: str | None = Field(default=None, max_length=2000)

    def options(self) -> TrainingOptions:
        """What the trainer runs: the training without its ids and callback."""
        return TrainingOptions.model_validate(self.model_dump(include=set(TrainingOptions.model_fields)))
