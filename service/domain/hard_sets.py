"""Natural adversarial hard sets: what `POST /v1/hard-sets` asks for and what its job answers.

A hard set is built the way ImageNet-A was (Hendrycks et al., 2021): from a pool of labelled samples,
keep those that every surrogate model gets wrong, each with confidence at least `min_confidence`, and
register them as a new dataset. A sample's confidence under a model is its largest softmax probability,
the softmax taken over the model's logits as the engine sees them (a model that outputs probabilities
gives its own largest output). Pydantic only: the API, the workers and the CLI share it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.domain.specs import InputRange

DEFAULT_MIN_CONFIDENCE = 0.5
MAX_SURROGATES = 16


class HardSetSpec(BaseModel):
    """Body of `POST /v1/hard-sets`."""

    # Unknown fields are a 422, as in every other spec.
    model_config = ConfigDict(extra="forbid")

    pool_dataset_id: str = Field(min_length=1, max_length=200, description="The labelled pool to filter.")
    surrogate_model_ids: list[str] = Field(
        min_length=1,
        max_length=MAX_SURROGATES,
        description="Models that must all misclassify a sample for it to be kept; run one after another.",
    )
    min_confidence: float = Field(
        default=DEFAULT_MIN_CONFIDENCE,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="A kept sample's largest softmax probability under every surrogate is at least this.",
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=500, description="The new dataset's name."
    )
    max_samples: int | None = Field(default=None, ge=1, description="Use the pool's first N samples only.")
    input_range: InputRange = (0.0, 1.0)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    callback_url: str | None = Field(default=None, max_length=2000)

    @field_validator("surrogate_model_ids")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if any(not model_id for model_id in value):
            raise ValueError("a surrogate model id must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("each surrogate model may be named once")
        return value


class SurrogateOutcome(BaseModel):
    """One surrogate on the pool."""

    model_id: str
    model_sha256: str
    accuracy: float = Field(description="Its accuracy on the pool.")
    misclassified_confident: int = Field(
        description="Pool samples it gets wrong with confidence at least min_confidence."
    )


class HardSetResult(BaseModel):
    """The result of a `hard_set` job."""

    dataset_id: str | None = Field(
        description="The new dataset of the kept samples; null when none was kept (no empty dataset is made)."
    )
    kept: int = Field(description="Samples every surrogate misclassified with confidence >= min_confidence.")
    pool_size: int = Field(description="Pool samples looked at (after max_samples).")
    min_confidence: float
    per_surrogate: list[SurrogateOutcome]
    per_class_kept: dict[str, int] = Field(
        description="Kept samples by their true label; every class of the pool is listed, zero or not."
    )
    pool_dataset_sha256: str
    dataset_sha256: str | None = Field(default=None, description="Of the new dataset's .npz file.")
    input_range: tuple[float, float] = (0.0, 1.0)
    message: str | None = Field(default=None, description="A sentence when nothing was kept.")
    seconds: float = 0.0
