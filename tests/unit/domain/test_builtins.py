"""The built-ins' metadata constants are what loading them gives (this test needs the worker install)."""

from __future__ import annotations

import pytest

from service.domain import builtins
from service.domain.builtins import BUILTIN_IDS, DatasetError, catalog
from service.domain.datasets import load_builtin


@pytest.mark.parametrize("dataset_id", BUILTIN_IDS)
def test_the_constants_are_what_load_builtin_gives(dataset_id: str) -> None:
    loaded = load_builtin(dataset_id)
    info = builtins.BUILTIN_INFO[dataset_id]
    assert (info.num_samples, info.sample_shape, info.num_classes, info.sha256) == (
        loaded.num_samples,
        loaded.sample_shape,
        loaded.num_classes,
        loaded.sha256,
    )
    assert sorted(set(loaded.y.tolist())) == list(range(info.num_classes))


def test_every_source_and_split_has_an_id_and_the_splits_add_up() -> None:
    assert set(BUILTIN_IDS) == {
        f"builtin:{source}{suffix}" for source in builtins.BUILTINS for suffix in ("", ":train", ":test")
    }
    for source in builtins.BUILTINS:
        whole, train, test = (builtins.BUILTIN_INFO[f"builtin:{source}{s}"] for s in ("", ":train", ":test"))
        assert train.num_samples + test.num_samples == whole.num_samples


def test_the_catalog_answers_what_the_api_lists() -> None:
    assert catalog.get("builtin:digits:test") == {
        "id": "builtin:digits:test",
        "sha256": builtins.BUILTIN_INFO["builtin:digits:test"].sha256,
        "num_samples": 359,
        "sample_shape": [8, 8, 1],
        "num_classes": 10,
    }
    assert list(catalog.all()) == list(BUILTIN_IDS)
    with pytest.raises(DatasetError, match="builtin:cifar"):
        catalog.get("builtin:cifar")
