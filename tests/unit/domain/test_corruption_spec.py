"""The corruptions spec: names and severities, its cost in the job-size cap, its place in the reuse key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.domain import corruptions
from service.domain.limits import corruption_steps, evaluation_steps
from service.domain.reuse import evaluation_cache_key
from service.domain.specs import CorruptionsSpec, EvaluationOptions, FGSMSpec


def test_defaults_all_names_at_every_severity() -> None:
    spec = CorruptionsSpec()
    assert spec.names == "all" and spec.severities == [1, 2, 3, 4, 5]
    assert spec.selected(channels=1) == [n for n in corruptions.CORRUPTION_NAMES if n != "saturate"]
    assert spec.selected(channels=3) == list(corruptions.CORRUPTION_NAMES)
    assert spec.most_items() == 13 * 5


def test_names_and_severities_are_checked_deduplicated_and_sorted() -> None:
    spec = CorruptionsSpec(names=["contrast", "contrast", "pixelate"], severities=[5, 1, 5])
    assert spec.names == ["contrast", "pixelate"] and spec.severities == [1, 5]
    with pytest.raises(ValidationError, match="unknown corruption fog, snow; known: gaussian_noise"):
        CorruptionsSpec(names=["fog", "contrast", "snow"])
    with pytest.raises(ValidationError, match="severity 6 is outside 1 to 5"):
        CorruptionsSpec(severities=[1, 6])
    with pytest.raises(ValidationError, match="non-empty"):
        CorruptionsSpec(names=[])
    with pytest.raises(ValidationError):
        CorruptionsSpec(names="some")  # type: ignore[arg-type]


def test_limits_count_samples_times_corruptions_times_severities() -> None:
    spec = CorruptionsSpec(names=["contrast", "pixelate"], severities=[1, 3, 5])
    # 1,000 samples x 6 items = 6,000 forward passes, counted as a third of a gradient step each.
    assert corruption_steps(spec, 1000) == 2000
    fgsm = FGSMSpec(eps=0.1)
    assert evaluation_steps([fgsm], 1000, corruptions=spec) == 1000 + 2000
    assert evaluation_steps([fgsm], 1000) == 1000


def test_reuse_key_holds_the_corruptions_and_only_when_asked() -> None:
    def key(options: EvaluationOptions) -> str:
        return evaluation_cache_key(options, model_sha256="m", model_output="logits", dataset_sha256="d")

    plain = EvaluationOptions(attacks=[FGSMSpec(eps=0.1)])
    some = plain.model_copy(update={"corruptions": CorruptionsSpec(severities=[1])})
    other = plain.model_copy(update={"corruptions": CorruptionsSpec(severities=[2])})
    assert len({key(plain), key(some), key(other)}) == 3
    assert key(some) == key(plain.model_copy(update={"corruptions": CorruptionsSpec(severities=[1, 1])}))
