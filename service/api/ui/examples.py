"""The example grid of a report: clean and adversarial images with their predictions, read from the
`adversarial_examples.npz` artifact a worker wrote (see `workers/evaluation/examples.py` for its arrays).

The file is loaded with `allow_pickle=False`; anything unexpected in it drops the grid, not the page.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.api.ui.png import png_data_uri

log = logging.getLogger(__name__)

_MAX_SIDE = 512


@dataclass(frozen=True)
class Image:
    src: str
    caption: str
    good: bool | None = None  # predicted the label: True, fooled: False, not a prediction: None


@dataclass(frozen=True)
class ExampleRow:
    label: int
    clean: Image
    adversarial: list[tuple[Image, Image]]  # (adversarial image, amplified perturbation) per column


@dataclass(frozen=True)
class ExampleGrid:
    columns: list[str]
    rows: list[ExampleRow]


def load_example_grid(path: Path) -> ExampleGrid | None:
    """The grid from an examples file, or None when there is none or its samples are not images."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return _grid(arrays)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("examples file %s not shown: %s", path, exc)
        return None


def _grid(arrays: dict[str, np.ndarray]) -> ExampleGrid | None:
    x_clean = arrays["x_clean"].astype(np.float64)
    x_adv = arrays["x_adv"].astype(np.float64)
    labels, clean_pred = arrays["label"].astype(int), arrays["clean_pred"].astype(int)
    adv_pred = arrays["adv_pred"].astype(int)
    attacks, norms, eps = arrays["attack"], arrays["norm"], arrays["eps"].astype(float)
    lo, hi = (float(v) for v in arrays["input_range"])
    k, m = x_clean.shape[0], eps.shape[0]
    if k == 0 or x_adv.shape[:2] != (m, k) or adv_pred.shape != (m, k) or not hi > lo:
        raise ValueError("the example arrays do not agree in shape")
    if _as_image(x_clean[0]) is None:
        return None
    columns = [f"{attacks[j]} {norms[j]} eps={eps[j]:g}" for j in range(m)]
    rows = []
    for i in range(k):
        clean = _pixels(x_clean[i], lo, hi)
        row = ExampleRow(
            label=int(labels[i]),
            clean=Image(png_data_uri(clean), f"pred {clean_pred[i]}", bool(clean_pred[i] == labels[i])),
            adversarial=[],
        )
        for j in range(m):
            delta = x_adv[j, i] - x_clean[i]
            scale = _perturbation_scale(delta, str(norms[j]), float(eps[j]))
            adv = Image(
                png_data_uri(_pixels(x_adv[j, i], lo, hi)),
                f"pred {adv_pred[j, i]}",
                bool(adv_pred[j, i] == labels[i]),
            )
            gain = f"×{1 / scale:.3g}" if scale > 0 else "none"
            row.adversarial.append((adv, Image(png_data_uri(_diverging(delta, scale)), f"δ {gain}")))
        rows.append(row)
    return ExampleGrid(columns, rows)


def _as_image(sample: np.ndarray) -> np.ndarray | None:
    """The sample as (H, W, 1|3), or None when it does not look like an image."""
    if sample.ndim == 1:
        side = math.isqrt(sample.size)
        image = sample.reshape(side, side, 1) if side * side == sample.size and side >= 4 else None
    elif sample.ndim == 2:
        image = sample[:, :, None]
    elif sample.ndim == 3 and sample.shape[2] in (1, 3):
        image = sample
    elif sample.ndim == 3 and sample.shape[0] in (1, 3):  # channels first
        image = np.moveaxis(sample, 0, -1)
    else:
        image = None
    if image is None or max(image.shape[:2]) > _MAX_SIDE or min(image.shape[:2]) < 2:
        return None
    return image


def _pixels(sample: np.ndarray, lo: float, hi: float) -> np.ndarray:
    image = _as_image(sample)
    if image is None:
        raise ValueError("an example is not an image")
    scaled = np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _perturbation_scale(delta: np.ndarray, norm: str, eps: float) -> float:
    """What maps to full colour: eps for L-inf (so the gain reads as 1/eps), else the largest change."""
    if norm == "linf" and eps > 0:
        return eps
    return float(np.abs(delta).max())


def _diverging(delta: np.ndarray, scale: float) -> np.ndarray:
    """Blue for a decrease, white for none, red for an increase (channel mean), full at `scale`."""
    image = _as_image(delta)
    if image is None:
        raise ValueError("a perturbation is not an image")
    t = np.clip(image.mean(axis=2) / scale, -1.0, 1.0) if scale > 0 else np.zeros(image.shape[:2])
    white = np.array([255.0, 255.0, 255.0])
    red, blue = np.array([178.0, 24.0, 43.0]), np.array([33.0, 102.0, 172.0])
    pos, neg = np.clip(t, 0, 1)[..., None], np.clip(-t, 0, 1)[..., None]
    rgb = white + pos * (red - white) + neg * (blue - white)
    pixels: np.ndarray = np.rint(rgb).astype(np.uint8)
    return pixels
