"""How a model's child process is walled off: the command that starts it, in one of two modes.

- `bwrap` (bubblewrap, Debian's `bubblewrap` package): new user, PID, network, IPC, UTS and cgroup
  namespaces; a root file system holding only the read-only runtime (the OS's /usr, the Python
  installation, the virtualenv, Parry's own packages), the job's model read-only, and the child's scratch
  directory as the one writable place; a fresh /tmp, /proc and minimal /dev; an empty environment. The
  child dies with its parent (`--die-with-parent`).
- `rlimits`: where namespaces cannot be made (an unprivileged container, a kernel without user
  namespaces), a plain child process. It keeps the resource limits, the deadlines, the kill and the
  empty environment, but sees the worker's file system and network; the worker log says so at start.

Either way the child applies its own resource limits before it imports anything of a model's
(`workers/sandbox/child.py`), and the parent enforces the wall-clock deadlines.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["bwrap", "rlimits"]
ModeSetting = Literal["auto", "bwrap", "rlimits"]

_NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts")
_NAMESPACES_TRY = ("--unshare-cgroup-try",)

# The read-only runtime every child sees: the OS's programs and libraries (merged /usr), and what
# Python and TensorFlow read at start (CPU topology for the thread pools, the dynamic loader's cache).
_SYSTEM_READS = (
    "/usr",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/localtime",
    "/etc/fonts",
    "/sys/devices/system/cpu",
)
_SYSTEM_LINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"))


class SandboxUnavailable(RuntimeError):
    """The configured mode cannot run on this machine (say, `bwrap` asked for but not installed)."""


def runtime_reads() -> list[Path]:
    """The Python installation, the virtualenv and the directories Parry's own packages load from."""
    import service
    import workers

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    paths |= {Path(module.__file__ or "").resolve().parent for module in (service, workers)}
    paths.add(Path(sys.executable).resolve().parent.parent)
    # Drop what another entry already covers, so bubblewrap binds each tree once.
    ordered = sorted(paths, key=lambda p: len(p.parts))
    return [p for i, p in enumerate(ordered) if not any(p.is_relative_to(q) for q in ordered[:i])]


def bwrap_command(
    argv: Sequence[str], *, reads: Sequence[Path], writes: Sequence[Path], scratch: Path
) -> list[str]:
    """`argv` run by bubblewrap: the runtime and `reads` read-only, `writes` writable, nothing else."""
    command = ["bwrap", "--die-with-parent", "--new-session", *_NAMESPACES, *_NAMESPACES_TRY]
    for target, link in _SYSTEM_LINKS:
        if os.path.islink(link):
            command += ["--symlink", target, link]
        elif os.path.isdir(link):
            command += ["--ro-bind", link, link]
    # The fresh mounts first: a bind below /tmp (a test's data directory) must land on top of them.
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for system in _SYSTEM_READS:
        command += ["--ro-bind-try", system, system]
    for read in [*runtime_reads(), *reads]:
        command += ["--ro-bind", str(read), str(read)]
    for write in writes:
        command += ["--bind", str(write), str(write)]
    command += ["--chdir", str(scratch), "--"]
    return command + list(argv)


@functools.lru_cache(maxsize=4)
def resolve_mode(setting: ModeSetting) -> Mode:
    """The mode children run in: `bwrap` when asked for or when `auto` finds it working, else `rlimits`."""
    if setting == "rlimits":
        log.warning(
            "sandbox: mode rlimits (set by PARRY_SANDBOX): model processes have resource limits and "
            "deadlines but see this machine's file system and network"
        )
        return "rlimits"
    problem = _bwrap_problem()
    if problem is None:
        log.info("sandbox: mode bwrap (bubblewrap: no network, read-only runtime, one writable scratch)")
        return "bwrap"
    if setting == "bwrap":
        raise SandboxUnavailable(f"PARRY_SANDBOX=bwrap, but bubblewrap cannot run here: {problem}")
    log.warning(
        "sandbox: bubblewrap cannot run here (%s), so model processes run in mode rlimits: resource "
        "limits and deadlines, but no network namespace and no file-system isolation; run the worker "
        "under a container runtime (docs/security.md)",
        problem,
    )
    return "rlimits"


def _bwrap_problem() -> str | None:
    """Why bubblewrap cannot make its namespaces here, or None when it can."""
    if shutil.which("bwrap") is None:
        return "the bwrap command is not installed (Debian: apt-get install bubblewrap)"
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    probe = bwrap_command([sys.executable, "-c", "pass"], reads=[], writes=[], scratch=Path("/"))
    try:
        done = subprocess.run(probe, capture_output=True, timeout=60, cwd=scratch, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        return said.splitlines()[-1]
    return None
