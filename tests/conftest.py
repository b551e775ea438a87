"""Shared fixtures. TensorFlow is imported lazily so tests that do not need it stay fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.domain.datasets import ArrayDataset, load_builtin
from tests import waiting

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_train() -> ArrayDataset:
    return load_builtin("builtin:mnist-5k:train")


@pytest.fixture(scope="session")
def mnist_test() -> ArrayDataset:
    return load_builtin("builtin:mnist-5k:test")


@pytest.fixture(scope="session")
def mnist_cnn(mnist_train: ArrayDataset) -> Any:
    """A normally trained small CNN with a logits head (about 95% clean test accuracy)."""
    from tests.modelzoo import small_cnn, train_clean

    return train_clean(small_cnn(), mnist_train, epochs=3)


@pytest.fixture(scope="session")
def model_files(mnist_cnn: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`mnist_cnn` exported in every upload format (see `modelzoo.export_model_files` for the keys)."""
    from tests.modelzoo import export_model_files

    return export_model_files(mnist_cnn, tmp_path_factory.mktemp("model_files"))


@pytest.fixture(scope="session")
def digits_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CNN trained for a second on the 8x8 digits, saved as .keras (worker and job tests)."""
    from tests.modelzoo import digits_cnn_file

    return digits_cnn_file(tmp_path_factory.mktemp("models") / "digits.keras")


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """`wait_until(check, timeout=30)`: return once `check()` is truthy; tests assert states, not times."""
    return waiting.wait_until


# AutoAttack versions small enough for tests, from the stages every branch has: a version is data.
SMALL_AUTOATTACK = {
    "fast": ({"name": "apgd-ce", "steps": 5}, {"name": "apgd-dlr", "steps": 5}),
    "standard": ({"name": "apgd-ce", "steps": 5, "restarts": 2}, {"name": "apgd-dlr", "steps": 5}),
}


@pytest.fixture
def small_autoattack(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[dict[str, Any], ...]]:
    """`autoattack` versions of two 5-step stages (the real ones take minutes per model)."""
    from service.domain import specs

    for version, stages in SMALL_AUTOATTACK.items():
        monkeypatch.setitem(specs.AUTOATTACK_STAGES, version, stages)
    return SMALL_AUTOATTACK
