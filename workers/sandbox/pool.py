"""The worker's model processes: a child per job, or the warm child of the same owner and model.

A runner opens a `Session` for the model it needs, stages the job's files into the session's inbox (copies:
the child never sees the content store), makes its calls, and reads what the child wrote to the session's
`out` folder through `Session.arrays`, which checks each `.npz` like an upload before re-encoding it. When
the session ends its folder is removed; the child stays warm for the next job of the same (owner, model
sha256) unless it was stopped, died, changed the model (training), or has had its share of CPU time. A warm
child never serves another owner, nor another model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.domain.datasets import DatasetError, check_npz_layout
from service.domain.jobs import ErrorType
from service.settings import Settings
from workers.runtime.heartbeat import Heartbeat
from workers.sandbox.isolation import resolve_mode
from workers.sandbox.process import Child
from workers.sandbox.protocol import ChildError, ChildStopped

log = logging.getLogger(__name__)

Output = Literal["auto", "logits", "probabilities"]


@dataclass(frozen=True)
class ModelRef:
    """The model a child serves: whose it is, its stored file, and the output kind the loader is told."""

    owner: str
    sha256: str
    path: Path
    output: Output


@dataclass
class Session:
    """One job's use of a child: its inbox and out folders, its calls, and the arrays it wrote."""

    child: Child
    model: ModelRef
    folder: Path
    heartbeat: Heartbeat
    silence_s: float
    what: str
    failed: bool = False
    _staged: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def model_arg(self) -> dict[str, Any]:
        return {
            "path": str(self.model.path),
            "sha256": self.model.sha256,
            "output": self.model.output,
            "work_dir": str(self.child.scratch / "model"),
        }

    def stage(self, source: Path) -> str:
        """Copy a file the job reads into the inbox; its path for the child."""
        target = self.folder / "in" / f"{next(self._staged)}-{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.child.call(
                op,
                {"model": self.model_arg(), "out": str(self.out), **args},
                progress=self.heartbeat.update,
                should_stop=self.heartbeat.should_stop,
                silence_s=self.silence_s,
                what=self.what,
            )
        except ChildError as exc:
            # A user error leaves the child sound; a kill, a death or a broken protocol does not.
            self.failed = not self.child.alive or exc.kind in (
                ErrorType.MODEL_CRASHED,
                ErrorType.INTERNAL_ERROR,
            )
            raise
        except ChildStopped:
            self.failed = True
            raise

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of `out/<name>`, checked like an uploaded `.npz` (the child's code may be hostile)."""
        path = self.out / name
        try:
            check_npz_layout(path)
            with np.load(path, allow_pickle=False) as data:
                return {key: np.array(data[key]) for key in data.files}
        except (DatasetError, OSError, ValueError) as exc:
            raise ChildError(
                ErrorType.MODEL_CRASHED, f"{self.what} wrote an unreadable {name}: {exc}"
            ) from exc


class ChildPool:
    """The children of one worker process: at most one warm child, kept for its (owner, model)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._warm: tuple[ModelRef, Child] | None = None
        self._counter = itertools.count()
        self.started = 0  # children started, for the logs and the tests

    @property
    def warm_child(self) -> Child | None:
        """The child kept for the next job of its model, if any."""
        return None if self._warm is None else self._warm[1]

    def scratch_root(self) -> Path:
        return self.settings.data_dir / "work"

    @contextlib.contextmanager
    def session(
        self,
        model: ModelRef,
        heartbeat: Heartbeat,
        *,
        what: str,
        writes: Sequence[Path] = (),
        reuse: bool = True,
        silence_s: float | None = None,
    ) -> Iterator[Session]:
        """A session on a child for `model`: the warm one when it fits, else a new one.

        `writes` are folders the child may write besides its scratch (a fresh child is started for them);
        `reuse=False` ends the child with the session (a training changes the model in place).
        """
        reuse = reuse and not writes and self.settings.sandbox_reuse_children
        child = self._child(model, writes=writes, fresh=bool(writes) or not reuse, what=what)
        folder = child.scratch / "calls" / str(next(self._counter))
        folder.mkdir(parents=True)
        session = Session(
            child, model, folder, heartbeat, silence_s or self.settings.sandbox_call_timeout_s, what
        )
        try:
            yield session
        except BaseException:
            session.failed = session.failed or not child.alive
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if session.failed or not reuse or not child.alive or self._spent(child):
                self._retire(child)
            else:
                self._warm = (model, child)

    def _child(self, model: ModelRef, *, writes: Sequence[Path], fresh: bool, what: str) -> Child:
        if self._warm is not None:
            served, warm = self._warm
            self._warm = None
            # The output kind may differ ("auto" at validation, what it found after): the same model.
            if (
                not fresh
                and (served.owner, served.sha256, served.path) == (model.owner, model.sha256, model.path)
                and warm.alive
            ):
                log.info("%s: reusing the warm child process %d", what, warm.process.pid)
                return warm
            self._retire(warm)
        scratch = self.scratch_root() / f"child-{next(self._counter)}.{socket.gethostname()}.{os.getpid()}"
        scratch.mkdir(parents=True)
        self.started += 1
        return Child(
            resolve_mode(self.settings.sandbox),
            scratch=scratch,
            reads=[model.path],
            writes=list(writes),
            limits=self.limits(),
            label=what,
        )

    def limits(self) -> dict[str, int]:
        settings = self.settings
        cpus = os.cpu_count() or 1
        return {
            "memory_bytes": settings.sandbox_memory_limit_bytes,
            # Twice a job's share: a warm child is retired once it has been busy for one time limit.
            "cpu_seconds": int(2 * settings.task_time_limit_s * cpus + 60),
            "file_bytes": 2 * settings.max_upload_bytes,
            "open_files": settings.worker_max_open_files,
        }

    def _spent(self, child: Child) -> bool:
        return child.busy_s >= self.settings.task_time_limit_s

    def _retire(self, child: Child) -> None:
        child.close()
        shutil.rmtree(child.scratch, ignore_errors=True)

    def close(self) -> None:
        """End the warm child (the worker is stopping)."""
        if self._warm is not None:
            self._retire(self._warm[1])
            self._warm = None
