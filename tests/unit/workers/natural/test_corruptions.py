"""The corruption generator: deterministic, in range, per-sample, and stronger with each severity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain import corruptions as names
from service.domain.datasets import ArrayDataset
from workers.natural import parameters
from workers.natural.corruptions import IMPLEMENTED, CorruptionError, corrupt

ALL = names.CORRUPTION_NAMES
GREY = [n for n in ALL if n not in names.COLOUR_ONLY]
# Published parameters that do not move the pixels further at every step: CIFAR-10-C's elastic transform
# shrinks its affine jitter as its displacement grows, and pixelate's coarse sides round to whole pixels.
NOT_MONOTONE_IN_DISTANCE = {"elastic_transform", "pixelate"}


@pytest.fixture(scope="module")
def digits(mnist_test: ArrayDataset) -> np.ndarray:
    return np.asarray(mnist_test.x[:64], np.float32)


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    # Smooth colour images, so blurs and JPEG have structure to act on.
    t = np.linspace(0, 1, 36, dtype=np.float32)
    base = np.stack([np.outer(t, 1 - t), np.outer(1 - t, t), np.outer(t, t)], axis=-1)
    shift = np.random.default_rng(0).random((12, 1, 1, 3)).astype(np.float32)
    return np.clip(base[None] * 0.8 + shift * 0.2, 0, 1)


def test_names_agree_with_the_service_constants() -> None:
    assert IMPLEMENTED == names.CORRUPTION_NAMES
    for table in (parameters.CIFAR_10_C, parameters.IMAGENET_C):
        assert tuple(table.values) == names.CORRUPTION_NAMES
        assert all(len(v) == len(names.SEVERITIES) for v in table.values.values())


def test_small_images_take_cifar_and_larger_imagenet_parameters() -> None:
    assert parameters.table_for(28, 28) is parameters.CIFAR_10_C
    assert parameters.table_for(32, 32) is parameters.CIFAR_10_C
    assert parameters.table_for(64, 64) is parameters.IMAGENET_C
    assert parameters.parameter("gaussian_noise", 5, height=224, width=224) == 0.38
    # Elastic lengths are fractions of the side in both scripts: they scale with it.
    assert parameters.parameter("elastic_transform", 2, height=16, width=16) == pytest.approx(
        (0.8, 3.2, 1.12)
    )


@pytest.mark.parametrize("name", GREY)
def test_deterministic_in_range_and_per_sample(digits: np.ndarray, name: str) -> None:
    low, high = -1.0, 1.0
    x = digits * 2.0 - 1.0
    a = corrupt(x, name, 3, seed=7, low=low, high=high)
    assert a.shape == x.shape and a.dtype == np.float32
    assert a.min() >= low and a.max() <= high
    np.testing.assert_array_equal(a, corrupt(x, name, 3, seed=7, low=low, high=high))
    # A sample gets the same corruption whichever batch (or shard) holds it.
    part = corrupt(x[10:30], name, 3, seed=7, low=low, high=high, first_index=10)
    np.testing.assert_allclose(part, a[10:30], atol=1e-6)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "motion_blur"])
def test_another_seed_gives_other_draws(digits: np.ndarray, name: str) -> None:
    a = corrupt(digits, name, 3, seed=1, low=0.0, high=1.0)
    b = corrupt(digits, name, 3, seed=2, low=0.0, high=1.0)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_colour_images_stay_in_range(colour: np.ndarray, name: str) -> None:
    for severity in names.SEVERITIES:
        out = corrupt(colour, name, severity, seed=0, low=0.0, high=1.0)
        assert out.shape == colour.shape and 0.0 <= out.min() and out.max() <= 1.0
        assert np.abs(out - colour).mean() > 0  # every one of them changes the images


def _distances(x: np.ndarray, name: str) -> list[float]:
    return [
        float(np.abs(corrupt(x, name, s, seed=0, low=0.0, high=1.0) - x).mean()) for s in names.SEVERITIES
    ]


@pytest.mark.parametrize("name", [n for n in GREY if n not in NOT_MONOTONE_IN_DISTANCE])
def test_distance_to_clean_grows_with_severity_on_digits(digits: np.ndarray, name: str) -> None:
    d = _distances(digits, name)
    assert d[0] > 0
    assert all(b >= a - 1e-4 for a, b in zip(d, d[1:], strict=False)), d


@pytest.mark.parametrize("name", [n for n in ALL if n not in NOT_MONOTONE_IN_DISTANCE | {"saturate"}])
def test_distance_to_clean_grows_with_severity_on_colour(colour: np.ndarray, name: str) -> None:
    d = _distances(colour, name)
    assert all(b >= a - 1e-4 for a, b in zip(d, d[1:], strict=False)), d


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise"])
def test_more_severe_noise_moves_more_predictions_off_the_clean_ones(
    mnist_cnn: Any, mnist_test: ArrayDataset, name: str
) -> None:
    # Accuracy itself need not fall with mild noise (a CNN's accuracy rose from 94.0% to 95.0% under
    # CIFAR-C's Gaussian noise on these 500 digits); the predictions it changes must grow in number.
    x = np.asarray(mnist_test.x[:500], np.float32)
    clean_logits = mnist_cnn.predict(x, batch_size=500, verbose=0)
    clean = np.argmax(clean_logits, axis=1)
    changed, drift = [], []
    for severity in names.SEVERITIES:
        noisy = corrupt(x, name, severity, seed=0, low=0.0, high=1.0)
        logits = mnist_cnn.predict(noisy, batch_size=500, verbose=0)
        changed.append(int((np.argmax(logits, axis=1) != clean).sum()))
        drift.append(float(np.abs(logits - clean_logits).mean()))
    # The same 500 samples: two more or fewer is noise of the draw, not a trend.
    assert all(b >= a - 2 for a, b in zip(changed, changed[1:], strict=False)), changed
    # The trend itself, in the logits: one session's CNN changed 1 prediction at every severity of shot
    # noise (2026-12-02), so a count alone cannot show it.
    assert all(b > a for a, b in zip(drift, drift[1:], strict=False)), drift


def test_shot_noise_has_poisson_statistics() -> None:
    # A flat grey image: counts at rate 0.5 * photons have that mean and variance.
    x = np.full((200, 16, 16, 1), 0.5, np.float32)
    for severity, photons in ((1, 500), (5, 50)):
        counts = corrupt(x, "shot_noise", severity, seed=3, low=0.0, high=1.0) * photons
        assert counts.mean() == pytest.approx(0.5 * photons, rel=0.01)
        assert counts.var() == pytest.approx(0.5 * photons, rel=0.05)
    dim = np.full((200, 16, 16, 1), 0.02, np.float32)  # rate 1 at 50 photons: the exact inversion
    counts = corrupt(dim, "shot_noise", 5, seed=3, low=0.0, high=1.0) * 50
    np.testing.assert_allclose(np.rint(counts), counts, atol=1e-3)
    assert counts.mean() == pytest.approx(1.0, rel=0.05)
    assert np.mean(np.rint(counts) == 0) == pytest.approx(np.exp(-1.0), abs=0.02)


def test_saturate_is_refused_for_grayscale_with_a_sentence(digits: np.ndarray) -> None:
    with pytest.raises(CorruptionError, match="saturate needs colour images"):
        corrupt(digits, "saturate", 1, seed=0, low=0.0, high=1.0)
    assert names.names_for(list(ALL), channels=1) == GREY
    assert names.names_for(list(ALL), channels=3) == list(ALL)


def test_unknown_name_and_severity_are_refused(digits: np.ndarray) -> None:
    with pytest.raises(CorruptionError, match="known: gaussian_noise"):
        corrupt(digits, "fog", 1, seed=0, low=0.0, high=1.0)
    with pytest.raises(CorruptionError, match="severity 6"):
        corrupt(digits, "contrast", 6, seed=0, low=0.0, high=1.0)
    with pytest.raises(CorruptionError, match=r"\(N, H, W, C\)"):
        corrupt(digits.reshape(64, -1), "contrast", 1, seed=0, low=0.0, high=1.0)


def test_the_docs_table_is_the_parameters() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[4] / "docs" / "corruptions.md").read_text()

    def cell(value: Any) -> str:
        return "(" + ", ".join(f"{v:g}" for v in value) + ")" if isinstance(value, tuple) else f"{value:g}"

    for table in (parameters.CIFAR_10_C, parameters.IMAGENET_C):
        assert f"| {table.source} | 1 | 2 | 3 | 4 | 5 |" in text
        for name, values in table.values.items():
            assert f"| `{name}` | " + " | ".join(cell(v) for v in values) + " |" in text, name
