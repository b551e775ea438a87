"""What a worker does to itself before it runs anyone's model: resource limits and a job-scoped directory.

A vetted model is still untrusted code. These are the basics every worker gets; strong isolation (gVisor,
nsjail, no egress network, a read-only root) is the operator's to add around the process (docs/security.md).

- Open files: RLIMIT_NOFILE lowered to `worker_max_open_files`.
- Core dumps: RLIMIT_CORE 0, so a crash does not write the process's memory (credentials, other users'
  arrays) to disk.
- Memory: RLIMIT_DATA (private writable memory: the heap and anonymous mappings) at
  `worker_memory_limit_bytes` when set; over it, TensorFlow raises ResourceExhaustedError and the job
  fails, the worker lives. Not RLIMIT_AS: TensorFlow and glibc reserve far more address space than they
  use (a small CNN measured 1.7 GB of virtual memory for 0.7 GB resident) and CUDA reserves the GPU's
  unified address range, so an address-space cap fails at random or at start; RLIMIT_DATA does not count
  those reservations.
- CPU time: no RLIMIT_CPU. It counts the whole process (every job it ever ran) and kills it with SIGXCPU;
  the per-job wall-clock limit (`task_time_limit_s`, checked between batches) bounds each job instead.
- Working directory: each job runs with its cwd in `data_dir/work/<job id>.<host>.<pid>`, made before and
  removed after, so a model that writes to a relative path writes there. `os.chdir` changes the whole process,
  which is right with `--pool=solo` (one job at a time per process), the only pool Parry uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

from service.settings import Settings
from workers.runtime.leftovers import job_directory_name

log = logging.getLogger(__name__)


def _cap(limit: int, value: int) -> None:
    # Soft and hard alike: a model's code running in this process cannot raise the limit again.
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


def apply_limits(settings: Settings) -> dict[str, int]:
    """Set this process's resource limits from the settings; returns the soft limits now in force."""
    _cap(resource.RLIMIT_CORE, 0)
    if settings.worker_max_open_files:
        _cap(resource.RLIMIT_NOFILE, settings.worker_max_open_files)
    if settings.worker_memory_limit_bytes:
        _cap(resource.RLIMIT_DATA, settings.worker_memory_limit_bytes)
    limits = {
        name: resource.getrlimit(getattr(resource, name))[0]
        for name in ("RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_DATA")
    }
    log.info("worker limits: %s", ", ".join(f"{k} {'unlimited' if v < 0 else v}" for k, v in limits.items()))
    return limits


@contextlib.contextmanager
def job_directory(data_dir: Path, job_id: str) -> Iterator[Path]:
    """Run the body with its cwd in a fresh `data_dir/work/<job_id>.<host>.<pid>`, then restore and remove."""
    # Per process too: a duplicate delivery of a running job to another worker must not touch this one's.
    # A killed worker's directory stays behind; `leftovers.sweep` removes it when a worker starts.
    work = data_dir.resolve() / "work" / job_directory_name(job_id)
    shutil.rmtree(work, ignore_errors=True)  # left over from a killed process that had this pid
    work.mkdir(parents=True)
    previous = os.getcwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(previous)
        shutil.rmtree(work, ignore_errors=True)
