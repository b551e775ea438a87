"""A minimal PNG encoder (8-bit grayscale or RGB, no filtering) for the report's example images.

Example images are at most a few dozen pixels a side, so the simplest valid PNG is small enough and
saves a dependency on an imaging library in the API process.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (grayscale, truecolour)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image shaped (H, W), (H, W, 1) or (H, W, 3)."""
    image = np.asarray(pixels)
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOR_TYPE or 0 in image.shape:
        raise ValueError(f"encode_png needs an (H, W), (H, W, 1) or (H, W, 3) image, got {image.shape}")
    height, width, channels = image.shape
    # Each scanline starts with its filter type; 0 means the bytes are stored as they are.
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + _chunk(b"IEND", b"")
    )


def png_data_uri(pixels: np.ndarray) -> str:
    """The image as a `data:image/png;base64,...` URI, for an <img> that needs no second request."""
    return "data:image/png;base64," + base64.b64encode(encode_png(pixels)).decode("ascii")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
