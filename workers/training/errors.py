"""What a training job raises: a user-fixable problem (one sentence), or a cancellation."""

from __future__ import annotations


class TrainingError(ValueError):
    """The model, the data and the options do not allow training; the message is one sentence."""


class TrainingCancelled(Exception):
    """`should_stop()` returned True; the position was checkpointed first."""
