"""Progress of a training job over its expected gradient work, with an ETA from this run's pace."""

from __future__ import annotations

import time
from collections.abc import Callable

from service.domain.results import Progress

# Progress callbacks usually write to the job store: at most a few per second.
_MIN_INTERVAL_S = 0.5


class ProgressTracker:
    """Work units done out of a total; a resumed run starts from the work its checkpoint had done.

    Args:
        total: work units of the whole job (forward+backward passes, summed over samples).
        done: units already done by earlier runs of the job.
    """

    def __init__(self, callback: Callable[[Progress], None] | None, *, total: float, done: float) -> None:
        self.callback, self.total, self.done = callback, max(total, 1.0), done
        self._start_done, self._start = done, time.perf_counter()
        self._last_report = -_MIN_INTERVAL_S

    def advance(self, units: float, stage: str, *, force: bool = False) -> None:
        self.done = min(self.done + units, self.total)
        self.report(stage, force=force)

    def report(self, stage: str, *, force: bool = False, extra: float = 0.0) -> None:
        """Send progress; `extra` counts units inside a sub-task (an evaluation) not yet advanced."""
        now = time.perf_counter()
        if self.callback is None or (not force and now - self._last_report < _MIN_INTERVAL_S):
            return
        self._last_report = now
        done = min(self.done + extra, self.total)
        run_done = done - self._start_done
        eta = (now - self._start) * (self.total - done) / run_done if run_done > 0 else None
        self.callback(Progress(fraction=min(max(done / self.total, 0.0), 1.0), stage=stage, eta_seconds=eta))
