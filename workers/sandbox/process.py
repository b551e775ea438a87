"""One model child process as the worker sees it: start it, make a call, watch its deadlines, kill it.

The worker never waits on the child blindly. A call returns when the child answers, and the child is killed
(its whole process group, SIGKILL) the moment the job's `should_stop()` says so (a cancel, the job's time
limit, the worker shutting down) or when it has been silent longer than the call's deadline. A killed child
is never used again.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.domain.jobs import ErrorType
from service.domain.results import Progress
from workers.sandbox.isolation import Mode, bwrap_command
from workers.sandbox.protocol import (
    ChildDied,
    ChildError,
    ChildStopped,
    ChildTimedOut,
    LineReader,
    ProtocolError,
    encode,
)

log = logging.getLogger(__name__)

_POLL_S = 0.1
# After a stop request the child has this long to end its call (a training writes its checkpoint) before
# it is killed: a cancel or a time limit lands within about 3 s (a poll of up to 1 s, then this).
STOP_GRACE_S = 2.0
# Environment variables a child may see: none of the worker's own (credentials, database URLs), only what
# the runtime's thread pools and logging read.
_PASSED_ENV = (
    "LANG",
    "LC_ALL",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
)


def describe_exit(returncode: int | None) -> str:
    """`killed by SIGKILL` or `exit status 3`, for the sentence a dead child's job fails with."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


class Child:
    """A started child process (`workers/sandbox/child.py`), in the sandbox's mode.

    Args:
        mode: `bwrap` or `rlimits` (`workers/sandbox/isolation.py`).
        scratch: the child's one writable folder (and its working directory).
        reads: files and folders it may read besides the runtime (the model).
        writes: folders it may write besides its scratch (a training job's checkpoints).
        limits: its resource limits (`child.apply_limits`).
        label: who it is for, in the logs.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        scratch: Path,
        reads: Sequence[Path],
        writes: Sequence[Path],
        limits: dict[str, int],
        label: str,
    ) -> None:
        self.mode, self.scratch, self.label = mode, scratch, label
        self.started = time.monotonic()
        self.busy_s = 0.0
        self.ready_s: float | None = None  # start-up: interpreter, imports and limits, until `ready`
        self._reader = LineReader()
        read_end, write_end = os.pipe()
        argv = [
            sys.executable, "-m", "workers.sandbox.child",
            "--events-fd", str(write_end), "--limits", json.dumps(limits),
            "--scratch", str(scratch),  # names the process in `ps` (and to the tests) by its job's folder
        ]  # fmt: skip
        command = argv
        if mode == "bwrap":
            command = bwrap_command(argv, reads=reads, writes=[scratch, *writes], scratch=scratch)
        tmp = scratch / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        env.update(
            {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": "/tmp" if mode == "bwrap" else str(tmp)}
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=2,  # the model's prints go to the worker's log, never into the channel
                pass_fds=(write_end,),
                start_new_session=True,  # its own process group: one kill ends it and its helpers
                env=env,
                cwd=scratch,
            )
        finally:
            os.close(write_end)
        self._events = read_end
        log.info("%s: child process %d started (sandbox %s)", label, self.process.pid, mode)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def call(
        self,
        op: str,
        args: dict[str, Any],
        *,
        progress: Callable[[Progress], None],
        should_stop: Callable[[], bool],
        silence_s: float,
        what: str,
    ) -> dict[str, Any]:
        """Run `op` in the child and return its result; raises ChildStopped, ChildError or a subclass."""
        started = time.monotonic()
        if not self._send({"op": op, "args": args}):
            raise self._died(what)
        try:
            return self._wait(progress, should_stop, silence_s, what)
        finally:
            self.busy_s += time.monotonic() - started

    def _send(self, request: dict[str, Any]) -> bool:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(encode(request))
            self.process.stdin.flush()
        except (OSError, ValueError):  # the child is gone (its stdin closed)
            return False
        return True

    def _wait(
        self,
        progress: Callable[[Progress], None],
        should_stop: Callable[[], bool],
        silence_s: float,
        what: str,
    ) -> dict[str, Any]:
        heard = time.monotonic()
        stopping_until: float | None = None
        while True:
            if stopping_until is None and should_stop():
                if self.ready_s is None:  # still starting: nothing of the call to save
                    self.kill()
                    raise ChildStopped(what)
                stopping_until = time.monotonic() + STOP_GRACE_S
                self._send({"op": "stop"})
            if stopping_until is not None and time.monotonic() > stopping_until:
                self.kill()
                raise ChildStopped(what)
            if time.monotonic() - heard > silence_s:
                self.kill()
                raise ChildTimedOut(
                    f"{what} gave no sign of progress for {silence_s:g} s (a model call that never "
                    "returns?), so its process was stopped"
                )
            readable, _, _ = select.select([self._events], [], [], _POLL_S)
            if not readable:
                continue
            data = os.read(self._events, 1 << 20)
            if not data:
                raise self._died(what)
            heard = time.monotonic()
            try:
                messages = list(self._reader.feed(data))
            except ProtocolError as exc:
                self.kill()
                raise ChildError(
                    ErrorType.MODEL_CRASHED, f"{what} stopped: its process broke the protocol"
                ) from exc
            for message in messages:
                answer = self._handle(message, progress)
                if stopping_until is not None and (answer is not None or message["event"] == "stopped"):
                    self.kill()  # it obeyed; a stopped child is not reused all the same
                    raise ChildStopped(what)
                if answer is not None:
                    return answer

    def _handle(self, message: dict[str, Any], progress: Callable[[Progress], None]) -> dict[str, Any] | None:
        event = message["event"]
        if event == "progress":
            progress(Progress.model_validate(message["progress"]))
        elif event == "ready":
            self.ready_s = time.monotonic() - self.started
            log.info("%s: child process ready in %.1f s", self.label, self.ready_s)
        elif event == "result":
            value = message.get("value")
            return value if isinstance(value, dict) else {}
        elif event == "error":
            kind = ErrorType(message.get("type", ErrorType.INTERNAL_ERROR.value))
            if kind == ErrorType.INTERNAL_ERROR:
                log.error(
                    "%s: internal error in the child process:\n%s", self.label, message.get("traceback")
                )
                raise ChildError(kind, "internal error in the model's process")
            raise ChildError(kind, str(message.get("message", "")))
        return None

    def _died(self, what: str) -> ChildDied:
        try:
            returncode = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self.process.returncode
        self.close_pipes()
        how = describe_exit(returncode)
        log.warning("%s: child process %d ended during a call: %s", self.label, self.process.pid, how)
        hint = (
            " (often its memory limit)"
            if returncode in (-signal.SIGKILL, -signal.SIGABRT, -signal.SIGSEGV)
            else ""
        )
        if returncode == -signal.SIGXCPU:
            hint = " (its CPU time limit)"
        return ChildDied(f"the model's process ended during {what}: {how}{hint}")

    def kill(self) -> None:
        """SIGKILL the child's process group and reap it; idempotent."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("%s: child process %d did not die after SIGKILL", self.label, self.process.pid)
        self.close_pipes()

    def close(self) -> None:
        """End the child: it holds nothing worth a graceful exit (its results are already read)."""
        self.kill()

    def close_pipes(self) -> None:
        if self._events >= 0:
            os.close(self._events)
            self._events = -1
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
