"""The common corruptions an evaluation can ask for, by name and severity (issue 17).

Standard library only: the API and the CLI validate a corruptions spec with these constants, without
NumPy; the generator (workers/natural/corruptions.py) implements exactly these names, and a test holds
the two sides together. docs/corruptions.md gives each one's parameters per severity.
"""

from __future__ import annotations

# The order reports list them in: noise, blur, colour, digital (ImageNet-C's grouping).
CORRUPTION_NAMES: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "gaussian_blur",
    "motion_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "saturate",
    "jpeg_compression",
    "pixelate",
    "elastic_transform",
)
# Saturation has no meaning on a single channel: grayscale evaluations skip it.
COLOUR_ONLY: frozenset[str] = frozenset({"saturate"})
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Images with both sides at most this many pixels take CIFAR-10-C's parameters, larger ones ImageNet-C's.
SMALL_IMAGE_MAX_SIDE = 32


def unknown_names(names: list[str]) -> list[str]:
    """The names in `names` that are no corruption, in their order."""
    return [name for name in names if name not in CORRUPTION_NAMES]


def names_for(names: list[str], *, channels: int) -> list[str]:
    """The corruptions that apply to images of `channels` channels (saturate needs 3 colour channels)."""
    return [name for name in names if channels == 3 or name not in COLOUR_ONLY]
