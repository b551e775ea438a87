"""Clean up after workers that died mid-job: their job directories and half-extracted archives.

A worker killed with kill -9 (or by the OOM killer) cannot remove the `data_dir/work/<job>.<host>.<pid>`
directory its job ran in, nor the hidden `.<name>.partial-*` folder a SavedModel archive was being
extracted into. Nothing reads them again, so they only fill the disk. Each worker sweeps them when it
starts: a job directory of this host whose process is gone, and a partial extraction nothing has
written to for an hour (it may be another worker's, on another machine, still extracting).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

STALE_EXTRACTION_S = 3600.0


def job_directory_name(job_id: str) -> str:
    """`<job>.<host>.<pid>`: unique per process, and tells a later sweep whose it was."""
    return f"{job_id.replace('/', '_')}.{socket.gethostname()}.{os.getpid()}"


def sweep(data_dir: Path, *, now: float | None = None) -> list[Path]:
    """Remove dead workers' leftovers under `data_dir`; returns what was removed."""
    now = time.time() if now is None else now
    removed = [p for p in _dead_job_directories(data_dir / "work") if _remove(p)]
    removed += [p for p in _stale_extractions(data_dir / "models", now) if _remove(p)]
    if removed:
        log.info("removed %d leftovers of dead workers: %s", len(removed), ", ".join(map(str, removed)))
    return removed


def _dead_job_directories(work: Path) -> list[Path]:
    host = socket.gethostname()
    found = []
    for path in work.glob("*.*.*") if work.is_dir() else []:
        rest, _, pid = path.name.rpartition(".")
        _, _, owner = rest.rpartition(".")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            found.append(path)
    return found


def _stale_extractions(models: Path, now: float) -> list[Path]:
    candidates = models.glob("*/.*.partial-*") if models.is_dir() else []
    return [p for p in candidates if p.is_dir() and now - _newest_mtime(p) > STALE_EXTRACTION_S]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _newest_mtime(path: Path) -> float:
    newest = path.stat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return newest


def _remove(path: Path) -> bool:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.warning("could not remove leftover %s: %s", path, exc)
        return False
    return True
