from pathlib import Path

import numpy as np
import pytest

from service.domain.datasets import (
    NO_LABEL,
    DatasetError,
    load_builtin,
    load_dataset,
    load_npz,
    summarize_npz,
)


def test_builtin_splits_are_fixed_disjoint_and_complete() -> None:
    full = load_builtin("builtin:mnist-5k")
    train, test = load_builtin("builtin:mnist-5k:train"), load_builtin("builtin:mnist-5k:test")
    assert (train.num_samples, test.num_samples) == (4000, 1000)
    assert full.sample_shape == (28, 28, 1) and full.x.dtype == np.float32
    assert 0.0 <= full.x.min() and full.x.max() <= 1.0
    # disjoint and complete: the two splits together hold every sample exactly once
    rows = {r.tobytes() for r in full.x.reshape(len(full.x), -1)}
    split_rows = [r.tobytes() for r in np.concatenate([train.x, test.x]).reshape(5000, -1)]
    assert len(split_rows) == 5000 and set(split_rows) <= rows
    assert load_builtin("builtin:mnist-5k:test").sha256 == test.sha256  # deterministic
    assert set(np.unique(test.y)) == set(range(10))


def test_digits() -> None:
    digits = load_dataset("builtin:digits:test")
    assert digits.sample_shape == (8, 8, 1) and digits.num_classes == 10
    assert load_dataset("builtin:digits").num_samples == 1797


@pytest.mark.parametrize("ref", ["builtin:cifar", "builtin:mnist-5k:val", "builtin:digits:test:x"])
def test_unknown_builtin(ref: str) -> None:
    with pytest.raises(DatasetError):
        load_builtin(ref)


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_npz_one_hot_and_integer_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((6, 4, 4, 1))
    y = np.array([0, 1, 2, 0, 1, 2])
    assert (load_npz(_npz(tmp_path, x=x, y=y)).y == y).all()
    one_hot = np.eye(3)[y]
    data = load_npz(_npz(tmp_path, x=x, y=one_hot))
    assert (data.y == y).all() and data.x.dtype == np.float32 and data.num_classes == 3


@pytest.mark.parametrize(
    ("arrays", "says"),
    [
        ({"y": np.zeros(3)}, "an array 'x'"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "2 labels but x has 3"),
        ({"x": np.full((2, 2), np.nan), "y": np.array([0, 1])}, "NaN"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "integers"),
        ({"x": np.zeros((2, 2)), "y": np.array([-1, 1])}, "non-negative"),
        ({"x": np.zeros((2, 2)), "y": np.array([[1, 1], [0, 1]])}, "one-hot"),
        ({"x": np.zeros(3), "y": np.array([0, 1, 2])}, "at least one feature axis"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict[str, np.ndarray], says: str) -> None:
    with pytest.raises(DatasetError, match=says):
        load_npz(_npz(tmp_path, **arrays))


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([object(), object()], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="pickle"):
        load_npz(path)


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_npz(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "x, y",
    [
        (np.random.default_rng(0).random((50, 4, 4, 1)), np.arange(50) % 7),
        (
            np.random.default_rng(1).random((30, 6)).astype(np.float32),
            np.eye(3, dtype=np.int64)[np.arange(30) % 3],
        ),
        (np.random.default_rng(2).random((20, 5)) > 0.5, (np.arange(20) % 2).astype(np.float64)),
        (np.asfortranarray(np.random.default_rng(3).random((40, 3))), np.arange(40) % 4),
    ],
)
def test_the_streamed_summary_agrees_with_loading_the_arrays(
    tmp_path: Path, x: np.ndarray, y: np.ndarray
) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=y)
    loaded = load_npz(path)
    summary = summarize_npz(path)
    assert (summary.num_samples, summary.sample_shape, summary.num_classes) == (
        loaded.num_samples, loaded.sample_shape, loaded.num_classes,
    )  # fmt: skip


def test_the_streamed_summary_refuses_what_loading_refuses(tmp_path: Path) -> None:
    x = np.zeros((10, 3), np.float64)
    x[7, 1] = 1e300  # finite in float64, infinite once cast to float32 as the workers use it
    np.savez(tmp_path / "big.npz", x=x, y=np.zeros(10, np.int64))
    np.savez(tmp_path / "short.npz", x=np.zeros((10, 3)), y=np.zeros(9, np.int64))
    for name, words in (("big.npz", "NaN or infinite"), ("short.npz", "9 labels but x has 10")):
        with pytest.raises(DatasetError, match=words):
            load_npz(tmp_path / name)
        with pytest.raises(DatasetError, match=words):
            summarize_npz(tmp_path / name)


def test_builtins_are_delivered_in_the_input_range_and_uploads_as_they_are() -> None:
    from service.domain.datasets import ArrayDataset, in_input_range, load_builtin

    digits = load_builtin("builtin:digits:test")
    assert digits.unit_range and float(digits.x.min()) == 0.0 and float(digits.x.max()) == 1.0
    scaled = in_input_range(digits, (0.0, 255.0))
    assert np.allclose(scaled.x, digits.x * 255.0) and scaled.sha256 == digits.sha256
    assert np.allclose(in_input_range(digits.take(5), (-1.0, 1.0)).x, digits.x[:5] * 2 - 1)
    assert in_input_range(digits, (0.0, 1.0)) is digits
    upload = ArrayDataset(digits.x, digits.y, "u" * 64, "dst_x")
    assert in_input_range(upload, (0.0, 255.0)) is upload


def test_value_range_rules() -> None:
    from service.domain.datasets import range_error, range_warning

    assert range_error(0.0, 1.0, (0.0, 1.0)) is None
    assert "outside input_range [0, 1]" in str(range_error(0.0, 255.0, (0.0, 1.0)))
    assert "outside" in str(range_error(-0.5, 0.5, (0.0, 1.0)))
    warning = range_warning(0.0, 1.0, (0.0, 255.0))  # [0, 1] images for a [0, 255] model: 0.4%
    assert warning is not None and "0.4% of input_range [0, 255]" in warning
    assert range_warning(0.0, 0.05, (0.0, 1.0)) is None  # exactly 5%: enough
    assert range_warning(0.2, 0.24, (0.0, 1.0)) is not None


def test_x_only_is_a_dataset_without_labels(tmp_path: Path) -> None:
    path = _npz(tmp_path, x=np.zeros((4, 3, 3, 1)))
    data = load_npz(path)
    assert (data.num_samples, data.num_classes) == (4, 0) and (data.y == NO_LABEL).all()
    summary = summarize_npz(path)
    assert (summary.num_samples, summary.num_classes, summary.sample_shape) == (4, 0, (3, 3, 1))
