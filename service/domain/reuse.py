"""Result reuse: the same model bytes, data bytes, attacks and seed give the same result, so give it again.

The key covers everything that changes a result: the model's bytes and how its output is read, the
dataset's bytes, the attacks with their defaults filled in, the corruptions, the seed, the input range,
the sample count and the batch size (random starts are seeded per batch), and the Parry version (a new
engine may score differently). Thresholds, callbacks and names change no result and stay out of it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata

from service.domain.specs import EvaluationOptions

# 2: built-in datasets are delivered in the job's input_range (they were always [0, 1]).
# 3: the attack engine of issue 13 (autoattack, stage rows and arrays, probes); results before it differ.
# 4: results hold calibration (issue 17), which older results lack.
KEY_VERSION = 4


@lru_cache(maxsize=1)
def _parry_version() -> str:
    try:
        return metadata.version("parry")
    except metadata.PackageNotFoundError:
        return "unknown"


def evaluation_cache_key(
    options: EvaluationOptions,
    *,
    model_sha256: str,
    model_output: str,
    dataset_sha256: str,
    ood_dataset_sha256: str | None = None,
) -> str:
    """sha256 of the canonical JSON of everything that decides an evaluation's result."""
    payload = {
        "key_version": KEY_VERSION,
        "parry": _parry_version(),
        "model_sha256": model_sha256,
        "model_output": model_output,
        "dataset_sha256": dataset_sha256,
        # model_dump fills in every default, so `{"name": "pgd"}` and `{"name": "pgd", "steps": 40}` agree.
        "attacks": [attack.model_dump(mode="json") for attack in options.attacks],
        "seed": options.seed,
        "input_range": [float(v) for v in options.input_range],
        "max_samples": options.max_samples,
        "batch_size": options.batch_size,
    }
    if options.ood is not None:
        # The OOD set by its bytes, not its id: the same data uploaded twice gives the same result.
        payload["ood"] = {"dataset_sha256": ood_dataset_sha256, "scores": list(options.ood.scores)}
    if options.corruptions is not None:
        # Only when asked for, so the keys of evaluations without corruptions stay what they were.
        payload["corruptions"] = options.corruptions.model_dump(mode="json")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
