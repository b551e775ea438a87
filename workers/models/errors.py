"""Why a model cannot be used, in sentences: the error every loader raises and the wording it shares.

Its own module so that the loaders of each format and the dispatcher in `loading.py` all import it
without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker's parent process raises ModelLoadError without loading TensorFlow
    import tensorflow as tf


class ModelLoadError(Exception):
    """The model cannot be used; the message is one sentence a user can act on."""


def fixed_input_shape(shape: tf.TensorShape) -> tuple[int, ...]:
    """The input shape without the batch dimension, or ModelLoadError when a dimension is unknown."""
    dims = shape.as_list() if shape.rank is not None else None
    if dims is None or len(dims) < 2 or any(d is None for d in dims[1:]):
        raise ModelLoadError(
            f"The model's input shape {describe_shape(dims[1:] if dims else None)} is not fully defined; "
            "export it with a fixed input shape."
        )
    return tuple(int(d) for d in dims[1:])


def describe_shape(dims: Any) -> str:
    """A shape as users write it: (None, 28, 28, 1)."""
    if dims is None:
        return "(unknown)"
    items = ["None" if d is None else str(int(d)) for d in list(dims)]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def first_sentence(exc: BaseException) -> str:
    """The first line of an exception's message, short enough for a rejection reason."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = text if len(text) <= 200 else text[:197] + "..."
    return text if text.endswith(".") else text + "."
