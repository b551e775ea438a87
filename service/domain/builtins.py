"""Metadata of the built-in datasets (id, sha256, shape, classes) for the API, without loading them in it.

Loading MNIST and importing scikit-learn costs the API process seconds and about 300 MB that it would
keep for good; a short-lived child process computes the metadata once instead, and the API caches it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from functools import lru_cache
from typing import Any

from service.domain import datasets

log = logging.getLogger(__name__)

BUILTIN_IDS: tuple[str, ...] = tuple(
    f"builtin:{name}{suffix}"
    for name in datasets.BUILTINS
    for suffix in ("", *(f":{s}" for s in datasets.SPLITS))
)
_TIMEOUT_S = 300


def describe(dataset: datasets.ArrayDataset, dataset_id: str) -> dict[str, Any]:
    return {
        "id": dataset_id,
        "sha256": dataset.sha256,
        "num_samples": dataset.num_samples,
        "sample_shape": list(dataset.sample_shape),
        "num_classes": dataset.num_classes,
    }


def compute_all() -> dict[str, dict[str, Any]]:
    """Load every built-in (each source once) and describe it; runs in the child process."""
    loader = getattr(datasets, "_builtin_arrays", None)
    if loader is not None:  # splits of one source share its arrays: read the package data once
        datasets._builtin_arrays = lru_cache(maxsize=None)(loader)
    return {ref: describe(datasets.load_builtin(ref), ref) for ref in BUILTIN_IDS}


class BuiltinCatalog:
    """Cached metadata of the built-ins; the first use waits for the child process (seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: dict[str, dict[str, Any]] | None = None

    def get(self, dataset_id: str) -> dict[str, Any]:
        """The metadata of a built-in id; DatasetError with a sentence for an unknown one."""
        if dataset_id not in BUILTIN_IDS:
            known = ", ".join(f"builtin:{b}[:train|:test]" for b in datasets.BUILTINS)
            raise datasets.DatasetError(f"unknown built-in dataset {dataset_id!r}; known: {known}")
        return self.all()[dataset_id]

    def all(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._info is None:
                self._info = _compute_in_child()
            return self._info


def _compute_in_child() -> dict[str, dict[str, Any]]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service.domain.builtins"],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=True,
        )
        info: dict[str, dict[str, Any]] = json.loads(done.stdout)
        return info
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        log.warning("built-in datasets described in-process (the child process failed: %s)", exc)
        return compute_all()


catalog = BuiltinCatalog()

if __name__ == "__main__":
    sys.stdout.write(json.dumps(compute_all()))
