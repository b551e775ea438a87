"""`parry check`'s checks file (`parry.toml`): model, dataset, attacks and the bars they must clear.

A checks file names a model, a dataset, and attacks with the robust accuracy each must keep:

    max_ece = 0.05                 # calibration.ece at most this (top-level keys come before any table)
    min_corruption_accuracy = 0.7  # corruptions.mean_accuracy at least this (needs [evaluation.corruptions])
    [model]
    path = "model.tar.gz"          # or id = "mdl_..."
    [dataset]
    path = "test.npz"              # or id = "builtin:mnist-5k:test"
    [evaluation.corruptions]       # accuracy under common corruptions (docs/corruptions.md)
    names = "all"                  # or a list of names
    severities = [1, 3, 5]
    [ood]                          # OOD detection against another dataset (labels not needed)
    path = "ood.npz"               # or id = "dst_..."
    scores = ["msp", "energy"]     # default all three: msp, max_logit, energy
    min_ood_auroc = 0.9            # every score's AUROC (ood.<score>.auroc) at least this
    [[checks]]
    attack = "pgd"                 # every attack field may follow: eps, steps, norm, ...
    eps = 0.05
    steps = 20
    min_robust_accuracy = 0.3
    use_lower_bound = true         # the 95% interval's lower bound must clear the bar
    [[checks]]
    attack = "cw"                  # a minimum-norm attack (cw, fmn); eps is optional
    min_median_norm = 1.2          # = [[thresholds]] metric "minimum_norm.cw.l2.median", min 1.2
    [[thresholds]]                 # a bar on any metric path (service/domain/metric_paths.py)
    metric = "worst_case.linf.0.3"
    min = 0.8                      # and/or max = ...
    [[thresholds]]
    metric = "corruptions.contrast.5"      # or corruptions.mean_accuracy
    min = 0.5

With `[ood]` or `[evaluation.corruptions]`, `[[checks]]` may be left out: the evaluation then runs no
attack.
A `[[thresholds]]` bar is a check of its own: a worst-case bar never replaces an attack's bar.
Judging a result against these bars is `service.domain.verdicts`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from service.domain.attack_syntax import (
    attack_fields,
    describe_validation_error,
    suggestion,
    unknown_attack_hint,
)
from service.domain.specs import (
    OOD_SCORES,
    AttackSpec,
    AttackSpecUnion,
    CorruptionsSpec,
    EvaluationSpec,
    OODScore,
    Threshold,
)
from service.domain.verdicts import DEFAULT_TOLERANCE

CONFIG_NAME = "parry.toml"

_ATTACK_ADAPTER: TypeAdapter[AttackSpecUnion] = TypeAdapter(AttackSpec)


class CheckConfigError(ValueError):
    """A checks file that cannot be used; the message is one sentence naming the file and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    path: Path | None = Field(default=None, description="SavedModel archive or directory, .keras or .h5.")
    id: str | None = Field(default=None, min_length=1, description="A model already on the server.")
    name: str | None = None
    output: Literal["auto", "logits", "probabilities"] = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.path is None) == (self.id is None):
            raise ValueError("give exactly one of path and id")
        return self


class DatasetSection(_Section):
    path: Path | None = Field(default=None, description=".npz with x and y.")
    id: str | None = Field(default=None, min_length=1, description="An uploaded dataset or a builtin: id.")
    name: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSection:
        if (self.path is None) == (self.id is None):
            raise ValueError("give exactly one of path and id")
        return self


class OODSection(_Section):
    path: Path | None = Field(default=None, description=".npz with x (y, if any, is ignored).")
    id: str | None = Field(default=None, min_length=1, description="An uploaded dataset or a builtin: id.")
    name: str | None = None
    scores: list[OODScore] | None = Field(default=None, description="Default: msp, max_logit and energy.")
    min_ood_auroc: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_source(self) -> OODSection:
        if (self.path is None) == (self.id is None):
            raise ValueError("give exactly one of path and id")
        return self

    def spec(self, dataset_id: str) -> dict[str, Any]:
        return {"dataset_id": dataset_id} | ({} if self.scores is None else {"scores": list(self.scores)})


class EvaluationSection(_Section):
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    max_samples: int | None = Field(default=None, ge=1)
    input_range: tuple[float, float] = (0.0, 1.0)
    timeout_s: float = Field(default=3600.0, gt=0, description="How long to wait for the job.")
    corruptions: CorruptionsSpec | None = None


class BaselineSection(_Section):
    job: str | None = Field(default=None, min_length=1, description="An earlier job on the server.")
    path: Path | None = Field(default=None, description="A JSON report of an earlier run.")
    tolerance: float = Field(
        default=DEFAULT_TOLERANCE,
        ge=0,
        le=1,
        description="Largest drop in robust accuracy that still passes.",
    )


class CheckEntry(BaseModel):
    """One `[[checks]]` table: an attack (its fields inline) and what its robust accuracy must be."""

    model_config = ConfigDict(extra="allow")  # the extra keys are the attack's fields

    attack: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=200)
    min_robust_accuracy: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    min_median_norm: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Minimum-norm attacks (cw, fmn): the median minimal norm must be at least this.",
    )
    use_lower_bound: bool | None = None
    max_regression: float | None = Field(default=None, ge=0, le=1)

    def attack_fields(self) -> dict[str, Any]:
        return {"name": self.attack.lower(), **(self.model_extra or {})}


class MetricThreshold(_Section):
    """One `[[thresholds]]` table: a metric path and the bars its value must clear."""

    metric: str = Field(min_length=1, max_length=200)
    # At most 1 except on a norm (minimum_norm.*): Threshold says so.
    min: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    use_lower_bound: bool | None = None
    name: str | None = Field(default=None, max_length=200)


class CheckConfig(_Section):
    """A whole checks file; relative paths in it are relative to the file."""

    use_lower_bound: bool = Field(default=False, description="Default of every check's use_lower_bound.")
    model: ModelSection
    dataset: DatasetSection
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    baseline: BaselineSection | None = None
    checks: list[CheckEntry] = Field(default_factory=list, max_length=64)
    metric_thresholds: list[MetricThreshold] = Field(
        default_factory=list, max_length=1000, alias="thresholds"
    )
    ood: OODSection | None = None
    max_ece: float | None = Field(
        default=None, ge=0, le=1, allow_inf_nan=False, description="calibration.ece at most this."
    )
    min_corruption_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="corruptions.mean_accuracy at least this (needs [evaluation.corruptions]).",
    )

    @model_validator(mode="after")
    def _has_checks(self) -> CheckConfig:
        if not self.checks and self.ood is None and self.evaluation.corruptions is None:
            raise ValueError(
                "add at least one [[checks]] table (an attack), an [ood] table or an "
                "[evaluation.corruptions] table"
            )
        if self.min_corruption_accuracy is not None and self.evaluation.corruptions is None:
            raise ValueError("min_corruption_accuracy needs an [evaluation.corruptions] table")
        return self

    def attack_specs(self) -> list[AttackSpecUnion]:
        specs = []
        for i, check in enumerate(self.checks):
            _check_keys(i, check)
            try:
                specs.append(_ATTACK_ADAPTER.validate_python(check.attack_fields()))
            except ValidationError as exc:
                raise CheckConfigError(f"checks[{i}] ({check.attack}): {_attack_problem(exc)}") from None
        return specs

    def thresholds(self) -> list[Threshold]:
        return [
            Threshold(
                attack=i,
                min_robust_accuracy=check.min_robust_accuracy,
                use_lower_bound=self.use_lower_bound
                if check.use_lower_bound is None
                else check.use_lower_bound,
                name=check.name,
            )
            for i, check in enumerate(self.checks)
            if check.min_robust_accuracy is not None
        ] + [
            *self._median_norm_thresholds(),
            *(self._metric_threshold(i, bar) for i, bar in enumerate(self.metric_thresholds)),
            *self._natural(),
        ]

    def _median_norm_thresholds(self) -> list[Threshold]:
        """A check's `min_median_norm` as the general bar on `minimum_norm.<attack>.<norm>.median`."""
        bars = []
        for i, check in enumerate(self.checks):
            if check.min_median_norm is None:
                continue
            spec = self.attack_specs()[i]
            if not spec.minimum_norm:
                raise CheckConfigError(
                    f"checks[{i}] ({check.attack}): min_median_norm is a bar on a minimum-norm attack "
                    "(cw, fmn); use min_robust_accuracy for this one"
                )
            metric = f"minimum_norm.{spec.name}.{spec.norm}.median"
            bars.append(Threshold(metric=metric, min=check.min_median_norm, name=check.name))
        return bars

    def _natural(self) -> list[Threshold]:
        """`max_ece`, `min_corruption_accuracy` and `[ood] min_ood_auroc` as the metric thresholds they
        stand for."""
        bars = []
        if self.max_ece is not None:
            bars.append(Threshold(metric="calibration.ece", max=self.max_ece))
        if self.min_corruption_accuracy is not None:
            bars.append(Threshold(metric="corruptions.mean_accuracy", min=self.min_corruption_accuracy))
        if self.ood is not None and self.ood.min_ood_auroc is not None:
            for score in self.ood.scores or OOD_SCORES:
                bars.append(Threshold(metric=f"ood.{score}.auroc", min=self.ood.min_ood_auroc))
        return bars

    def _metric_threshold(self, i: int, bar: MetricThreshold) -> Threshold:
        lower = self.use_lower_bound if bar.use_lower_bound is None else bar.use_lower_bound
        try:
            return Threshold(
                metric=bar.metric, min=bar.min, max=bar.max, use_lower_bound=lower, name=bar.name
            )
        except ValidationError as exc:
            problem = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise CheckConfigError(f"thresholds[{i}] ({bar.metric}): {problem}") from None

    def evaluation_spec(
        self, *, model_id: str, dataset_id: str, no_cache: bool = False, ood_dataset_id: str | None = None
    ) -> dict[str, Any]:
        """The body of `POST /v1/evaluations` for these checks (`ood_dataset_id` with an [ood] table)."""
        ev = self.evaluation
        ood = {} if self.ood is None else {"ood": self.ood.spec(ood_dataset_id or "-")}
        return ood | {
            "model_id": model_id,
            "dataset_id": dataset_id,
            "attacks": [
                spec.model_dump(mode="json", exclude_defaults=True) | {"name": spec.name}
                for spec in self.attack_specs()
            ],  # fmt: skip
            "input_range": list(ev.input_range),
            "max_samples": ev.max_samples,
            "batch_size": ev.batch_size,
            "seed": ev.seed,
            "corruptions": None if ev.corruptions is None else ev.corruptions.model_dump(mode="json"),
            "no_cache": no_cache,
            "thresholds": [t.model_dump(mode="json", exclude_none=True) for t in self.thresholds()],
        }

    def regression_limits(self, default: float) -> list[float]:
        """Per check, the largest drop from the baseline that passes."""
        return [default if c.max_regression is None else c.max_regression for c in self.checks]


def _check_keys(index: int, check: CheckEntry) -> None:
    """A key that is neither an attack field nor a check's own is a typo: say which key it was near."""
    name = check.attack.lower()
    if not attack_fields(name):
        return  # an unknown attack: _attack_problem names the known ones
    for key in check.model_extra or {}:
        if key not in attack_fields(name):
            known = [*CheckEntry.model_fields, *attack_fields(name)]
            raise CheckConfigError(
                f"checks[{index}] ({check.attack}): {key!r} is neither a key of a check nor a field of "
                f"{name}" + suggestion(key, known)
            )


def _attack_problem(exc: ValidationError) -> str:
    problem = exc.errors()[0]
    if problem["type"] == "union_tag_invalid":
        tag = str((problem.get("ctx") or {}).get("tag", ""))
        return "unknown attack" + unknown_attack_hint(tag)
    return describe_validation_error(exc)


def find_config(explicit: Path | None, cwd: Path | None = None) -> Path:
    """`--config` when given, else `parry.toml` in the current directory."""
    path = explicit if explicit is not None else (cwd or Path.cwd()) / CONFIG_NAME
    if not path.is_file():
        hint = "" if explicit is not None else " (pass --config FILE to use another file)"
        raise CheckConfigError(f"checks file {path} does not exist{hint}")
    return path


def load_config(path: Path) -> CheckConfig:
    """Read and validate a checks file; every problem is a CheckConfigError naming the file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CheckConfigError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckConfigError(f"cannot read checks file {path}: {exc}") from None
    try:
        config = CheckConfig.model_validate(raw)
    except ValidationError as exc:
        raise CheckConfigError(f"{path}: {_config_problem(exc)}") from None
    # Attack fields and metric paths are checked now, not when the server answers 422.
    try:
        EvaluationSpec.model_validate(
            config.evaluation_spec(model_id="-", dataset_id="-", ood_dataset_id="-")
        )
    except ValidationError as exc:
        raise CheckConfigError(f"{path}: {describe_validation_error(exc)}") from None
    base = path.parent
    if config.model.path is not None:
        config.model.path = _existing(base / config.model.path, "model", path)
    if config.dataset.path is not None:
        config.dataset.path = _existing(base / config.dataset.path, "dataset", path)
    if config.ood is not None and config.ood.path is not None:
        config.ood.path = _existing(base / config.ood.path, "OOD dataset", path)
    if config.baseline is not None and config.baseline.path is not None:
        config.baseline.path = _existing(base / config.baseline.path, "baseline", path)
    return config


def _existing(target: Path, what: str, config: Path) -> Path:
    if not target.exists():
        raise CheckConfigError(f"{config}: the {what} file {target} does not exist")
    return target


def _config_problem(exc: ValidationError) -> str:
    errors = exc.errors()
    # A misspelt key also leaves the key it meant missing: the unknown one is the useful complaint.
    problem = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in problem["loc"]) or "the file"
    if problem["type"] == "extra_forbidden":
        section = _section_at(problem["loc"][:-1])
        known = section.model_fields if section is not None else ()
        return f"{loc!r} is not a known key" + suggestion(str(problem["loc"][-1]), known)
    if problem["type"] == "missing":
        return f"{loc!r} is required"
    return f"{loc}: {str(problem['msg']).removeprefix('Value error, ')}"


def _section_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at `loc` in a checks file (CheckConfig at the top)."""
    section: type[BaseModel] = CheckConfig
    for part in loc:
        if isinstance(part, int):
            continue  # an index into a list of tables
        field = section.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return None
        section = found
    return section


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # `X | None`, `list[X]`
        found = _model_in(arg)
        if found is not None:
            return found
    return None
