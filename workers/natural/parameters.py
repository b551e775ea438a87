"""The published severities of the common corruptions: CIFAR-10-C for small images, ImageNet-C for larger.

Values are those of Hendrycks & Dietterich (2019), `make_cifar_c.py` and `make_imagenet_c.py`, taken at
face value in pixels: blur radii are not rescaled, because a disk of radius 1 scaled to 0.875 loses its
neighbours and the severities stop growing. The elastic transform is the exception: both scripts write
its lengths as fractions of the image side (32 * 0.05, 244 * 2), so they scale with the shorter side.
docs/corruptions.md publishes these tables; a test checks that it agrees with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.domain.corruptions import SMALL_IMAGE_MAX_SIDE


@dataclass(frozen=True)
class Table:
    """One benchmark's parameters: per corruption, a value per severity 1..5."""

    source: str
    reference_side: int
    values: dict[str, tuple[Any, ...]]


CIFAR_10_C = Table(
    source="CIFAR-10-C",
    reference_side=32,
    values={
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # standard deviation, in [0, 1] units
        "shot_noise": (500, 250, 100, 75, 50),  # photons at full intensity (Poisson rate)
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
        "defocus_blur": (
            (0.3, 0.4),
            (0.4, 0.5),
            (0.5, 0.6),
            (1.0, 0.2),
            (1.5, 0.1),
        ),  # disk radius, alias sigma
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma
        "motion_blur": ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)),  # radius, sigma
        "zoom_blur": ((7, 0.01), (12, 0.01), (16, 0.01), (21, 0.01), (26, 0.01)),  # zooms 1, 1+step, ...
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the distance to the mean
        "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),  # HSV saturation * a + b
        "jpeg_compression": (80, 65, 58, 50, 40),  # quality
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side of the coarse image, relative
        # alpha (displacement), sigma (its smoothness), affine jitter: 32 * (0, 0, .08), 32 * (.05, .2, .07)
        "elastic_transform": (
            (0.0, 0.0, 2.56),
            (1.6, 6.4, 2.24),
            (2.56, 1.92, 1.92),
            (3.2, 1.28, 1.6),
            (3.2, 0.96, 0.96),
        ),
    },
)

IMAGENET_C = Table(
    source="ImageNet-C",
    reference_side=224,
    values={
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "defocus_blur": ((3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "motion_blur": ((10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0)),
        "zoom_blur": ((12, 0.01), (16, 0.01), (11, 0.02), (13, 0.02), (11, 0.03)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "saturate": ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        # ImageNet-C writes these as multiples of 244 for its 224 px images.
        "elastic_transform": (
            (488.0, 170.8, 24.4),
            (488.0, 19.52, 48.8),
            (12.2, 2.44, 4.88),
            (17.08, 2.44, 4.88),
            (29.28, 2.44, 4.88),
        ),
    },
)

# The parameters written as fractions of the image side, which scale with it.
SPATIAL = frozenset({"elastic_transform"})


def table_for(height: int, width: int) -> Table:
    """CIFAR-10-C's parameters for images of at most 32 px a side, ImageNet-C's for larger ones."""
    return CIFAR_10_C if max(height, width) <= SMALL_IMAGE_MAX_SIDE else IMAGENET_C


def parameter(name: str, severity: int, *, height: int, width: int) -> Any:
    """The parameter of `name` at `severity` for images of this size, pixel lengths scaled to it."""
    table = table_for(height, width)
    value = table.values[name][severity - 1]
    if name not in SPATIAL:
        return value
    scale = min(height, width) / table.reference_side
    return tuple(v * scale for v in value) if isinstance(value, tuple) else value * scale
