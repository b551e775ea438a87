"""Waiting for what another thread or process does: poll a condition, fail after a generous timeout."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], object], timeout: float = 30.0) -> None:
    """Return once `check()` is truthy (polled every 5 ms); fail after a generous `timeout`.

    For what happens on another thread (the job cache's poller): the test asserts the state, not the time.
    """
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{check} did not hold within {timeout} s"
        time.sleep(0.005)
