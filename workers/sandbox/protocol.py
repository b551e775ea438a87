"""The narrow channel between a worker and its model's child process.

The parent writes one request a line on the child's stdin: `{"op": ..., "args": {...}}`. The child answers
on a pipe of its own (its stdout and stderr are the model's to scribble on, and go to the worker's log), one
JSON object a line: `ready` once at start, then for each request any number of `progress` events and one
`result` or `error`. Nothing else crosses: no file descriptors, no pickles. Arrays travel as `.npz` files in
the child's scratch directory, which the parent checks and re-encodes before anything else reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from service.domain.jobs import ErrorType

# What the child's calls name the arrays they write into their `out` folder.
PER_SAMPLE_FILE = "per_sample.npz"
EXAMPLES_FILE = "examples.npz"
CLEAN_FILE = "clean.npz"
SHARD_FILE = "shard.npz"
HARD_SET_FILE = "hard_set.npz"

# A line longer than this is not a message of ours: the child is killed (a flood would fill the worker).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ChildError(Exception):
    """A call in the child ended with an error; `kind` is the job's `error.type`, the message one sentence."""

    def __init__(self, kind: ErrorType, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ChildStopped(Exception):
    """The parent stopped the call (cancel, time limit, worker shutdown) and killed the child."""


class ChildTimedOut(ChildError):
    """A call ran past its deadline without a word from the child, which was killed."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorType.TIME_LIMIT_EXCEEDED, message)


class ChildDied(ChildError):
    """The child ended in the middle of a call: a crash, a resource limit, or a signal from elsewhere."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorType.MODEL_CRASHED, message)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class ProtocolError(ValueError):
    """The child wrote something that is not a message: it is killed."""


class LineReader:
    """Splits the child's byte stream into messages, refusing lines over `MAX_MESSAGE_BYTES`."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            yield decode(line)
        if len(self._buffer) > self._limit:
            raise ProtocolError(f"the child wrote a line of over {self._limit:,} bytes")


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"the child wrote a line that is not JSON: {line[:80]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise ProtocolError(f"the child wrote a message without an event: {line[:80]!r}")
    return message
