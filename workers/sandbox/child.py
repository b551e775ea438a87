"""The model's child process: `python -m workers.sandbox.child --events-fd N --limits JSON`.

It bounds itself before it imports TensorFlow or reads a model (its limits are soft and hard alike, so a
model's code cannot raise them again), asks to be killed if its parent dies, then serves the parent's
requests one at a time (`workers/sandbox/protocol.py`) until its stdin closes. It never reaches the store,
the broker or the network: everything it needs is in the request and the files it may read.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from typing import IO, Any

from service.domain.jobs import ErrorType
from service.domain.results import Progress
from workers.sandbox.protocol import encode

_PR_SET_PDEATHSIG = 1
# At most this many progress events a second: the parent only keeps the latest.
_PROGRESS_EVERY_S = 0.1


def apply_limits(limits: dict[str, int]) -> None:
    """Cap this process: memory (RLIMIT_DATA, see docs/security.md for why not RLIMIT_AS), CPU, files."""
    caps = {
        "memory_bytes": resource.RLIMIT_DATA,
        "cpu_seconds": resource.RLIMIT_CPU,
        "file_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
    }
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for name, limit in caps.items():
        value = int(limits.get(name, 0))
        if value > 0:
            _soft, hard = resource.getrlimit(limit)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(limit, (value, value))


def die_with_parent() -> None:
    """SIGKILL when the worker dies (bubblewrap's --die-with-parent does the same in its mode)."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's kill on its deadlines still holds
        pass
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


class Channel:
    """The child's end of the event pipe."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._last_progress = 0.0

    def send(self, message: dict[str, Any]) -> None:
        self._stream.write(encode(message))
        self._stream.flush()

    def progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last_progress >= _PROGRESS_EVERY_S or progress.fraction >= 1.0:
            self._last_progress = now
            self.send({"event": "progress", "progress": progress.model_dump(mode="json")})


def serve(channel: Channel, requests: IO[bytes]) -> None:
    """Answer requests until stdin closes; one result, error or `stopped` per request.

    A reader thread takes the parent's lines, so a `stop` arriving during a call sets the flag the engine
    polls between batches: the call ends with `stopped` (a training checkpoints first), and the parent
    kills the child if that takes longer than its grace period.
    """
    from workers.runtime.devices import configure_devices
    from workers.sandbox.calls import Calls, Stopped, error_kind  # TensorFlow comes in here, after the limits

    configure_devices()  # memory growth must be set before a GPU is initialised
    calls = Calls()
    pending: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        for line in requests:
            request = json.loads(line)
            if request.get("op") == "stop":
                stop.set()
            else:
                pending.put(request)
        pending.put(None)

    threading.Thread(target=read, name="parry-child-requests", daemon=True).start()
    channel.send({"event": "ready", "pid": os.getpid()})
    while (request := pending.get()) is not None:
        stop.clear()
        try:
            value = calls.run(request["op"], request["args"], channel.progress, stop.is_set)
        except Stopped:
            channel.send({"event": "stopped"})
            continue
        except Exception as exc:
            kind = error_kind(exc)
            if kind is None:
                channel.send(
                    {
                        "event": "error",
                        "type": ErrorType.INTERNAL_ERROR.value,
                        "traceback": traceback.format_exc(),
                    }
                )
            else:
                channel.send({"event": "error", "type": kind.value, "message": str(exc)})
            continue
        channel.send({"event": "result", "value": value})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="workers.sandbox.child")
    parser.add_argument("--events-fd", type=int, required=True)
    parser.add_argument("--limits", default="{}")
    parser.add_argument("--scratch", help="its working folder (also what names it in ps)")
    args = parser.parse_args(argv)
    apply_limits(json.loads(args.limits))
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="child: %(levelname)s %(message)s")
    with os.fdopen(args.events_fd, "wb", buffering=0) as events:
        serve(Channel(events), sys.stdin.buffer)


if __name__ == "__main__":
    main()
