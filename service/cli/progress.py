"""Progress of a server job on stderr: a rich progress bar on a terminal, plain lines in a CI log."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn

from service.domain.jobs import JobStatus


class JobProgressDisplay:
    """Feed it every polled Job (`update`); it shows the fraction done, the stage and the ETA.

    Not a terminal (a CI log): one line when the stage or status changes, or every `every_s` seconds,
    so logs stay short and still show that the job is alive.
    """

    def __init__(self, console: Console, *, job_id: str, quiet: bool = False, every_s: float = 10.0) -> None:
        self.console, self.job_id, self.quiet, self.every_s = console, job_id, quiet, every_s
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line: tuple[str, str] | None = None
        self._last_time = 0.0

    def __enter__(self) -> JobProgressDisplay:
        if not self.quiet and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stage]}"),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.job_id, total=1.0, stage="queued")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, job: dict[str, Any]) -> None:
        if self.quiet:
            return
        progress = job.get("progress") or {}
        fraction = float(progress.get("fraction") or 0.0)
        stage = str(progress.get("stage") or "")
        status = str(job.get("status", ""))
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=fraction, stage=stage or status)
            return
        now = time.monotonic()
        if (status, stage) == self._last_line and now - self._last_time < self.every_s:
            return
        self._last_line, self._last_time = (status, stage), now
        line = f"job {self.job_id}: {status}"
        if status == JobStatus.RUNNING:
            line += f" {100 * fraction:5.1f}%"
            if stage:
                line += f" {stage}"
            if progress.get("eta_seconds") is not None:
                line += f", ETA {float(progress['eta_seconds']):.0f} s"
        self.console.print(line, highlight=False, markup=False)
