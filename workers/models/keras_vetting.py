"""Checks on a Keras `.keras` or `.h5` file that run before Keras opens it.

The configuration is vetted as JSON (service/vetting/keras_config.py). HDF5 files (an `.h5` model, and the
`model.weights.h5` inside a `.keras` zip) are walked with h5py without following links: an external
link, a virtual dataset or a dataset stored in external raw files would make HDF5 read other files of
this machine, so any of them refuses the file. Keras older than 3.14 lacks fixes for known safe_mode
bypasses, so loading needs at least that version.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from service.vetting.keras_config import UnsafeKerasConfig, check_config, check_keras_file, parse_config
from workers.models.errors import ModelLoadError

MIN_KERAS = (3, 14)
# The inner weights file of a .keras zip is copied out to be walked; the archive was already checked
# against the expansion limits, this only bounds one more copy.
_MAX_INNER_H5_BYTES = 8 * 1024**3


def check_keras_version(version: str | None = None) -> None:
    """ModelLoadError unless the installed Keras is at least 3.14 (the release with the known fixes)."""
    if version is None:
        import keras

        version = str(keras.__version__)
    parts = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])
    if parts < MIN_KERAS:
        raise ModelLoadError(
            f"This worker has Keras {version}; Parry loads .keras and .h5 models only with Keras "
            f"{MIN_KERAS[0]}.{MIN_KERAS[1]} or newer (fixes for known safe-mode bypasses)."
        )


def vet_keras_file(path: Path, suffix: str) -> None:
    """Refuse an unsafe `.keras` (`suffix=".keras"`) or `.h5` file with a ModelLoadError sentence."""
    try:
        if suffix == ".keras":
            check_keras_file(path)
            _check_inner_weights(path)
        else:
            check_h5_file(path)
    except UnsafeKerasConfig as exc:
        raise ModelLoadError(str(exc)) from exc


def check_h5_file(path: Path) -> None:
    """An `.h5` model: no external links, virtual or externally stored datasets, and a safe model_config."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            check_h5_links(f)
            raw = f.attrs.get("model_config")
    except UnsafeKerasConfig:
        raise
    except (OSError, ValueError) as exc:
        raise UnsafeKerasConfig(
            f"The .h5 file could not be loaded: it is not readable HDF5 ({exc})."
        ) from exc
    if raw is None:
        raise UnsafeKerasConfig(
            "The .h5 file has no model_config (only weights); save the whole model with model.save()."
        )
    check_config(parse_config(raw.decode() if isinstance(raw, bytes) else str(raw), what="model_config"))


def check_h5_links(root: Any) -> None:
    """Walk every group of an open h5py file by its links, following none that leaves the file."""
    import h5py

    todo: list[tuple[Any, str]] = [(root, "/")]
    seen: set[Any] = set()
    while todo:
        group, where = todo.pop()
        for name in group:
            link = group.get(name, getlink=True)
            path = f"{where.rstrip('/')}/{name}"
            if isinstance(link, h5py.ExternalLink):
                raise UnsafeKerasConfig(
                    f"The HDF5 file links {path} to another file ({link.filename}); Parry refuses such links."
                )
            if isinstance(link, h5py.SoftLink):
                continue  # points inside this file, at something walked through its hard link
            item = group.get(name)
            if isinstance(item, h5py.Dataset):
                if item.is_virtual:
                    raise UnsafeKerasConfig(
                        f"The HDF5 dataset {path} is virtual (its data is in other files); Parry refuses it."
                    )
                if item.external:
                    raise UnsafeKerasConfig(
                        f"The HDF5 dataset {path} is stored in external files; Parry refuses it."
                    )
            elif isinstance(item, h5py.Group) and item.id not in seen:  # a group hard-linked into itself
                seen.add(item.id)
                todo.append((item, path))


def _check_inner_weights(path: Path) -> None:
    import h5py

    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".h5")]
        for name in names:
            if zf.getinfo(name).file_size > _MAX_INNER_H5_BYTES:
                raise UnsafeKerasConfig(f"The .keras file's {name} is larger than Parry accepts.")
            with tempfile.NamedTemporaryFile(suffix=".h5") as tmp:
                with zf.open(name) as src:
                    shutil.copyfileobj(src, tmp)
                tmp.flush()
                try:
                    with h5py.File(tmp.name, "r") as f:
                        check_h5_links(f)
                except (OSError, ValueError) as exc:
                    raise UnsafeKerasConfig(
                        f"The .keras file's {name} cannot be read as HDF5: {exc}."
                    ) from exc
