"""A running job's heartbeat: writes progress to the store and renews the job's lease from a thread.

The thread keeps the lease alive while the engine is busy in one long step (tracing a PGD loop can
take seconds without a progress call), and turns the store's "stop" answer (cancel requested or
lease lost) and the job's time limit into the `should_stop()` the engine polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from service.domain.jobs import ErrorType, JobStatus, job_error
from service.domain.results import Progress
from service.settings import Settings

StopReason = Literal["stop_requested", "time_limit", "shutdown"]
# The status a stopped run ends with, and its error (a time limit) or None (a cancel).
StopOutcome = tuple[JobStatus, dict[str, str] | None]

log = logging.getLogger(__name__)

# Set when the worker process is asked to stop: a running job stops and is handed back to the queue.
SHUTTING_DOWN = threading.Event()


class Heartbeat:
    """Progress writer and lease keeper for one job.

    Args:
        report: writes a progress (and so renews the lease); returns False when the job must stop.
        poll: a cheap read, asked every beat in which nothing was written: True when the job must stop (a
            cancel lands within about a second even while the model is silent and nothing is written).
        time_limit_s: the job stops once it has run this long.
        min_interval_s: progress is written at most this often.
        renew_every_s: the lease is renewed at least this often, progress or not.
    """

    def __init__(
        self,
        report: Callable[[Progress], bool],
        *,
        poll: Callable[[], bool] | None = None,
        time_limit_s: float,
        min_interval_s: float = 1.0,
        renew_every_s: float = 15.0,
    ) -> None:
        self._report = report
        self._poll = poll
        self._deadline = time.monotonic() + time_limit_s
        self.time_limit_s = time_limit_s
        self._min_interval_s = min_interval_s
        self._renew_every_s = renew_every_s
        self._latest = Progress(fraction=0.0, stage="starting")
        self._written: Progress | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parry-heartbeat", daemon=True)
        self.stop_reason: StopReason | None = None

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def update(self, progress: Progress) -> None:
        """Record the engine's latest progress; the thread writes it within `min_interval_s`."""
        with self._lock:
            self._latest = progress

    def should_stop(self) -> bool:
        if self.stop_reason is None and time.monotonic() > self._deadline:
            self.stop_reason = "time_limit"
        if self.stop_reason is None and SHUTTING_DOWN.is_set():
            self.stop_reason = "shutdown"
        return self.stop_reason is not None

    def stopped(self, what: str = "the job") -> StopOutcome | None:
        """How a run that obeyed `should_stop()` ends.

        None when the worker is shutting down: the caller hands the job back to the queue. Otherwise
        ("failed", a TimeLimitExceeded error naming `what`) or ("cancelled", None).
        """
        if self.stop_reason == "shutdown":
            return None
        if self.stop_reason == "time_limit":
            detail = f"{what} exceeded the time limit of {self.time_limit_s:g} s"
            return JobStatus.FAILED, job_error(ErrorType.TIME_LIMIT_EXCEEDED, detail)
        return JobStatus.CANCELLED, None

    def _check(self) -> None:
        if self._poll is None or self.stop_reason is not None:
            return
        try:
            if self._poll():
                self.stop_reason = "stop_requested"
        except Exception:  # a database hiccup: the next beat asks again
            log.warning("heartbeat: could not check for a stop request; retrying", exc_info=True)

    def _run(self) -> None:
        last_write = time.monotonic()
        while not self._done.wait(self._min_interval_s):
            with self._lock:
                latest = self._latest
            changed = latest != self._written
            if not changed and time.monotonic() - last_write < self._renew_every_s:
                self._check()
                continue
            try:
                keep_going = self._report(latest)
            except Exception:  # a database hiccup must not kill the job; the next beat retries
                log.warning("heartbeat: could not write progress; retrying", exc_info=True)
                continue
            last_write = time.monotonic()
            self._written = latest
            if not keep_going and self.stop_reason is None:
                self.stop_reason = "stop_requested"


def lease_heartbeat(
    report: Callable[[Progress], bool], settings: Settings, *, poll: Callable[[], bool] | None = None
) -> Heartbeat:
    """A heartbeat with the limits of `settings`: its time limit, and the lease renewed 4 times a term."""
    return Heartbeat(
        report,
        poll=poll,
        time_limit_s=settings.task_time_limit_s,
        renew_every_s=max(0.5, settings.job_lease_s / 4),
    )
