"""The start-up sweep of dead workers' job directories and half-extracted archives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from workers.runtime.leftovers import STALE_EXTRACTION_S, job_directory_name, sweep


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "file").write_text("x")
    return path


def test_sweep_removes_dead_workers_leftovers_and_nothing_else(tmp_path: Path) -> None:
    data, host = tmp_path / "data", socket.gethostname()
    dead = _make(data / "work" / f"job_a.{host}.{_dead_pid()}")
    mine = _make(data / "work" / job_directory_name("job_b"))  # this live process's
    elsewhere = _make(data / "work" / f"job_c.another-host.{_dead_pid()}")  # maybe alive over there
    other = _make(data / "work" / "not-a-job-directory")
    stale = _make(data / "models" / "ab12" / ".saved_model-x.partial-k3j")
    fresh = _make(data / "models" / "cd34" / ".saved_model-y.partial-q9z")
    old = time.time() - STALE_EXTRACTION_S - 60
    for path in (stale, stale / "file"):
        os.utime(path, (old, old))
    for path in (fresh,):  # an old folder with a file written just now: still being extracted
        os.utime(path, (old, old))
    complete = _make(data / "models" / "ab12" / "saved_model-x")
    os.utime(complete, (old, old))

    removed = sweep(data)

    assert sorted(removed) == sorted([dead, stale])
    assert not dead.exists() and not stale.exists()
    assert all(p.exists() for p in (mine, elsewhere, other, fresh, complete))
    assert sweep(data) == []  # nothing more the second time


def test_sweep_of_an_empty_data_dir_does_nothing(tmp_path: Path) -> None:
    assert sweep(tmp_path / "missing") == []
