"""The common corruptions of ImageNet-C / CIFAR-10-C (Hendrycks & Dietterich, 2019), generated batched.

`corrupt` takes a whole batch and never loops over its images in Python: noise, colour and contrast are
array arithmetic, blurs are one depthwise convolution (a loop over a motion kernel's taps or a zoom blur's
factors is the only loop), JPEG encodes the batch as one mosaic image.

Randomness is drawn per sample: sample `first_index + i` gets the same uniforms whatever batch or shard
holds it (a Philox counter advanced to the sample's block), so a sharded evaluation corrupts exactly
what one worker does, and the same seed gives the same images. Gaussian and Poisson values come from
those uniforms by inversion, which is what keeps the count of uniforms per sample fixed.

The parameters (workers/natural/parameters.py) are the published ones; where this code departs from the
reference scripts, it says so in docs/corruptions.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from scipy import ndimage, special

from service.domain.corruptions import COLOUR_ONLY, CORRUPTION_NAMES, SEVERITIES
from workers.natural.parameters import parameter

# uniforms(stream, count) -> (n, count) values in (0, 1), one row per sample.
Uniforms = Callable[[int, int], np.ndarray]
Corruption = Callable[[np.ndarray, Any, Uniforms], np.ndarray]

# Poisson rates below this are drawn exactly by inverting the CDF; above, by a normal approximation
# (Cornish-Fisher corrected), whose error is far below one grey level once divided by the rate's scale.
_EXACT_POISSON_BELOW = 30.0
# JPEG works on 8x8 blocks, and on 16x16 once chroma is subsampled: images padded to this tile a mosaic
# without sharing a block.
_JPEG_TILE = {1: 8, 3: 16}
_JPEG_MAX_SIDE = 16_384


class CorruptionError(ValueError):
    """A corruption that does not apply to these images; the message says why in a sentence."""


def corrupt(
    x: np.ndarray,
    name: str,
    severity: int,
    *,
    seed: int,
    low: float,
    high: float,
    first_index: int = 0,
) -> np.ndarray:
    """`x` (NHWC, float32 in [low, high]) under corruption `name` at `severity` (1-5), same shape and dtype.

    `first_index` is the position of `x[0]` in the whole dataset: sample i's randomness depends only on
    (seed, name, first_index + i), the same at every severity.

    Raises:
        CorruptionError: an unknown name or severity, images that are not NHWC, or saturate on
            images without 3 colour channels.
    """
    if name not in CORRUPTION_NAMES:
        raise CorruptionError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTION_NAMES)}")
    if severity not in SEVERITIES:
        raise CorruptionError(f"severity {severity} is not one of {', '.join(map(str, SEVERITIES))}")
    if x.ndim != 4:
        raise CorruptionError(f"corruptions need images of shape (N, H, W, C); these have {x.shape}")
    channels = x.shape[-1]
    if name in COLOUR_ONLY and channels != 3:
        raise CorruptionError(
            f"{name} needs colour images (3 channels) and these have {channels}; leave it out "
            "(names 'all' skips it for grayscale)"
        )
    if x.shape[0] == 0:
        return x.astype(np.float32, copy=True)
    unit = (np.asarray(x, np.float32) - low) / (high - low)
    value = parameter(name, severity, height=x.shape[1], width=x.shape[2])
    uniforms = _uniform_source(seed, name, first_index, x.shape[0])
    out = _CORRUPTIONS[name](np.clip(unit, 0.0, 1.0), value, uniforms)
    out = np.clip(np.asarray(out, np.float32), 0.0, 1.0)
    return np.clip(out * (high - low) + low, low, high).astype(np.float32)


def _uniform_source(seed: int, name: str, first_index: int, n: int) -> Uniforms:
    # The severity stays out of the key: every severity uses the same draws (common random numbers),
    # so two severities differ by their parameter only and the stronger one is stronger sample by sample.
    def uniforms(stream: int, count: int) -> np.ndarray:
        key = np.random.SeedSequence([seed, CORRUPTION_NAMES.index(name), stream])
        bits = np.random.Philox(key=key.generate_state(2, np.uint64))
        blocks = -(-count // 4)  # Philox yields four 64-bit words per counter step
        bits.advance(first_index * blocks)
        u = np.random.Generator(bits).random((n, blocks * 4))[:, :count]
        return u + 2.0**-54  # random() gives k / 2**53: this keeps 0 out, so inversions stay finite

    return uniforms


def _per_sample(uniforms: Uniforms, stream: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniforms shaped like the batch `shape` (N, ...), each sample's from its own block."""
    return uniforms(stream, int(np.prod(shape[1:]))).reshape(shape)


# ---- noise ------------------------------------------------------------------------------------------


def _gaussian_noise(x: np.ndarray, sigma: float, uniforms: Uniforms) -> np.ndarray:
    return np.asarray(x + sigma * special.ndtri(_per_sample(uniforms, 0, x.shape)))


def _shot_noise(x: np.ndarray, photons: float, uniforms: Uniforms) -> np.ndarray:
    return _poisson(x * photons, _per_sample(uniforms, 0, x.shape)) / photons


def _poisson(rate: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson draws of `rate` by inversion of the uniforms `u` (exact for small rates)."""
    rate = rate.astype(np.float64)
    z = special.ndtri(u)
    counts = np.maximum(np.floor(rate + np.sqrt(rate) * z + (z * z - 1.0) / 6.0 + 0.5), 0.0)
    flat = counts.ravel()
    # The count of each small rate is the first k whose CDF reaches u: walk k up, one step for every
    # rate still below its u at once, dropping the ones that got there.
    todo = np.flatnonzero(rate.ravel() < _EXACT_POISSON_BELOW)
    lam, us = rate.ravel()[todo], u.ravel()[todo]
    p = np.exp(-lam)
    cdf = p.copy()
    flat[todo] = 0.0
    k = 0
    while todo.size and k < 10 * _EXACT_POISSON_BELOW:  # past that, u is within rounding of 1
        left = us > cdf
        todo, lam, us, p, cdf = todo[left], lam[left], us[left], p[left], cdf[left]
        k += 1
        flat[todo] = k
        p = p * lam / k
        cdf += p
    return np.asarray(flat.reshape(rate.shape))


def _impulse_noise(x: np.ndarray, amount: float, uniforms: Uniforms) -> np.ndarray:
    hit = _per_sample(uniforms, 0, x.shape) < amount
    salt = _per_sample(uniforms, 1, x.shape) < 0.5
    return np.where(hit, salt.astype(np.float32), x)


# ---- blur -------------------------------------------------------------------------------------------


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each channel of each image correlated with `kernel`, edges mirrored (OpenCV's filter2D default).

    SciPy over the whole batch: measured faster here than TensorFlow's depthwise convolution.
    """
    return np.asarray(ndimage.correlate(x, kernel.astype(np.float32)[None, :, :, None], mode="mirror"))


def _gaussian_window(sigma: float, half: int) -> np.ndarray:
    t = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-(t * t) / (2.0 * max(sigma, 1e-6) ** 2))
    return np.asarray(w / w.sum())


def _defocus_blur(x: np.ndarray, value: tuple[float, float], uniforms: Uniforms) -> np.ndarray:
    radius, alias_sigma = value
    # A disk of the radius, softened by a small Gaussian (3 taps, 5 past a radius of 8) as the
    # reference does to hide its aliasing.
    soft = 1 if radius <= 8 else 2
    half = math.ceil(radius) + soft
    t = np.arange(-half, half + 1, dtype=np.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).astype(np.float64)
    g = _gaussian_window(alias_sigma, soft)
    kernel = ndimage.convolve(disk / disk.sum(), np.outer(g, g), mode="constant")
    return _convolve(x, kernel / kernel.sum())


def _gaussian_blur(x: np.ndarray, sigma: float, uniforms: Uniforms) -> np.ndarray:
    return np.asarray(ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0))


def _motion_blur(x: np.ndarray, value: tuple[float, float], uniforms: Uniforms) -> np.ndarray:
    """A one-sided Gaussian streak along a random angle in [-45, 45] degrees per image (ImageMagick's)."""
    radius, sigma = value
    width = 2 * math.ceil(radius) + 1
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps * taps) / (2.0 * max(sigma, 1e-6) ** 2))
    weights /= weights.sum()
    angle = np.deg2rad(uniforms(0, 1)[:, 0] * 90.0 - 45.0)
    n, h, w, c = x.shape
    rows, cols = np.arange(h), np.arange(w)
    pixels = x.reshape(n * h * w, c)
    base = (np.arange(n) * h * w)[:, None, None]
    out = np.zeros_like(x)
    for tap, weight in zip(taps, weights, strict=True):
        dy = np.rint(tap * np.sin(angle)).astype(np.int64)
        dx = np.rint(tap * np.cos(angle)).astype(np.int64)
        r = np.clip(rows[None, :] - dy[:, None], 0, h - 1)
        col = np.clip(cols[None, :] - dx[:, None], 0, w - 1)
        index = base + r[:, :, None] * w + col[:, None, :]
        out += np.float32(weight) * np.take(pixels, index.ravel(), axis=0).reshape(x.shape)
    return out


def _zoom_blur(x: np.ndarray, value: tuple[int, float], uniforms: Uniforms) -> np.ndarray:
    count, step = value
    total = x.astype(np.float32, copy=True)
    for zoom in 1.0 + step * np.arange(count):
        total += _zoom_centre(x, float(zoom))
    return total / (count + 1)


def _zoom_centre(x: np.ndarray, zoom: float) -> np.ndarray:
    """The centre 1/zoom of each image, enlarged back to the image's size."""
    h, w = x.shape[1:3]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    big = tf.image.resize(x[:, top : top + ch, left : left + cw], (round(ch * zoom), round(cw * zoom)))
    trim_h, trim_w = (big.shape[1] - h) // 2, (big.shape[2] - w) // 2
    return np.asarray(big[:, trim_h : trim_h + h, trim_w : trim_w + w])


# ---- colour and contrast ----------------------------------------------------------------------------


def _brightness(x: np.ndarray, shift: float, uniforms: Uniforms) -> np.ndarray:
    if x.shape[-1] != 3:  # a grey level is its own HSV value
        return x + shift
    hsv = np.array(tf.image.rgb_to_hsv(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0.0, 1.0)
    return np.asarray(tf.image.hsv_to_rgb(hsv))


def _contrast(x: np.ndarray, factor: float, uniforms: Uniforms) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.asarray((x - means) * factor + means)


def _saturate(x: np.ndarray, value: tuple[float, float], uniforms: Uniforms) -> np.ndarray:
    scale, shift = value
    hsv = np.array(tf.image.rgb_to_hsv(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0.0, 1.0)
    return np.asarray(tf.image.hsv_to_rgb(hsv))


# ---- digital ----------------------------------------------------------------------------------------


def _jpeg_compression(x: np.ndarray, quality: int, uniforms: Uniforms) -> np.ndarray:
    """Every image through one JPEG encode and decode: the batch tiled as a mosaic of whole blocks."""
    n, h, w, c = x.shape
    if c not in _JPEG_TILE:
        raise CorruptionError(f"jpeg_compression needs 1 or 3 channels; these images have {c}")
    tile = _JPEG_TILE[c]
    ph, pw = -(-h // tile) * tile, -(-w // tile) * tile
    pixels = np.rint(x * 255.0).astype(np.uint8)
    # Edge-padded to whole tiles, as an encoder pads a lone image, so no block mixes two images.
    padded = np.pad(pixels, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    per_row = max(1, _JPEG_MAX_SIDE // pw)
    per_mosaic = per_row * max(1, _JPEG_MAX_SIDE // ph)
    out = np.empty((n, h, w, c), np.float32)
    for start in range(0, n, per_mosaic):  # one mosaic unless the batch is huge
        part = padded[start : start + per_mosaic]
        cols = min(per_row, part.shape[0])
        rows = -(-part.shape[0] // cols)
        grid = np.zeros((rows * cols, ph, pw, c), np.uint8)
        grid[: part.shape[0]] = part
        mosaic = grid.reshape(rows, cols, ph, pw, c).transpose(0, 2, 1, 3, 4).reshape(rows * ph, cols * pw, c)
        encoded = tf.io.encode_jpeg(mosaic, quality=int(quality))
        # Plain chroma upsampling: the "fancy" one interpolates across block edges, so across images.
        decoded = np.asarray(tf.io.decode_jpeg(encoded, channels=c, fancy_upscaling=False))
        back = decoded.reshape(rows, ph, cols, pw, c).transpose(0, 2, 1, 3, 4).reshape(rows * cols, ph, pw, c)
        out[start : start + part.shape[0]] = back[: part.shape[0], :h, :w] / 255.0
    return out


def _pixelate(x: np.ndarray, fraction: float, uniforms: Uniforms) -> np.ndarray:
    h, w = x.shape[1:3]
    small = tf.image.resize(x, (max(1, int(h * fraction)), max(1, int(w * fraction))), method="area")
    return np.asarray(tf.image.resize(small, (h, w), method="area"))


def _elastic_transform(x: np.ndarray, value: tuple[float, float, float], uniforms: Uniforms) -> np.ndarray:
    """A random affine jitter of three points, then a smooth random displacement field (Simard et al.).

    Both warps are composed into one sampling of the clean image (the reference resamples twice).
    """
    alpha, sigma, jitter = value
    n, h, w, _ = x.shape
    centre = np.array([w // 2, h // 2], np.float64)
    size = min(h, w) // 3
    corners = np.array([centre + size, [centre[0] + size, centre[1] - size], centre - size])  # (x, y)
    moved = corners[None] + (uniforms(0, 6).reshape(n, 3, 2) * 2.0 - 1.0) * jitter
    # The affine maps each image's corners to its moved ones; the warp samples the source at its inverse.
    system = np.concatenate([corners, np.ones((3, 1))], axis=1)
    forward = np.einsum("ij,njk->nki", np.linalg.inv(system), moved)  # (n, 2, 3): rows x', y'
    inverse = np.linalg.inv(forward[:, :, :2])
    offset = -np.einsum("nij,nj->ni", inverse, forward[:, :, 2])
    fields = (uniforms(1, 2 * h * w).reshape(n, 2, h, w) * 2.0 - 1.0).astype(np.float32)
    if sigma > 0:
        fields = ndimage.gaussian_filter(fields, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0)
    dx, dy = fields[:, 0] * alpha, fields[:, 1] * alpha
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    px, py = gx[None] + dx, gy[None] + dy
    src_x = inverse[:, 0, 0, None, None] * px + inverse[:, 0, 1, None, None] * py + offset[:, 0, None, None]
    src_y = inverse[:, 1, 0, None, None] * px + inverse[:, 1, 1, None, None] * py + offset[:, 1, None, None]
    return _bilinear(x, src_y, src_x)


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Indices mirrored into [0, size) with the edge repeated (d c b a | a b c d), once each side."""
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size, 2 * size - 1 - index, index)
    return np.asarray(np.clip(index, 0, size - 1))  # a displacement past a whole image stops at the edge


def _bilinear(x: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Each image of `x` sampled at its own (sy, sx) of shape (N, H, W), bilinearly, edges mirrored."""
    n, h, w, _ = x.shape
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = (sy - y0)[..., None].astype(np.float32), (sx - x0)[..., None].astype(np.float32)
    y0i, x0i = y0.astype(np.int64), x0.astype(np.int64)
    rows0, rows1 = _reflect(y0i, h), _reflect(y0i + 1, h)
    cols0, cols1 = _reflect(x0i, w), _reflect(x0i + 1, w)
    pixels = x.reshape(n * h * w, -1)
    base = (np.arange(n) * h * w)[:, None, None]

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.asarray(np.take(pixels, (base + rows * w + cols).ravel(), axis=0).reshape(x.shape))

    top = at(rows0, cols0) * (1 - fx) + at(rows0, cols1) * fx
    bottom = at(rows1, cols0) * (1 - fx) + at(rows1, cols1) * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


_CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturate": _saturate,
    "jpeg_compression": _jpeg_compression,
    "pixelate": _pixelate,
    "elastic_transform": _elastic_transform,
}
IMPLEMENTED: tuple[str, ...] = tuple(_CORRUPTIONS)
