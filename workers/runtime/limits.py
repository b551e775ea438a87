"""The resource limits a worker process sets on itself at start.

Models never run in the worker: each runs in a child process with limits of its own (workers/sandbox/).
These bound the worker itself, and the children inherit them as a ceiling.

- Open files: RLIMIT_NOFILE lowered to `worker_max_open_files`.
- Core dumps: RLIMIT_CORE 0, so a crash does not write the process's memory (credentials, other users'
  arrays) to disk.
- Memory: RLIMIT_DATA (private writable memory: the heap and anonymous mappings) at
  `worker_memory_limit_bytes` when set; over it, TensorFlow raises ResourceExhaustedError and the job
  fails, the worker lives. Not RLIMIT_AS: TensorFlow and glibc reserve far more address space than they
  use (a small CNN measured 1.7 GB of virtual memory for 0.7 GB resident) and CUDA reserves the GPU's
  unified address range, so an address-space cap fails at random or at start; RLIMIT_DATA does not count
  those reservations.
- CPU time: no RLIMIT_CPU on the worker, which lives through many jobs; each model process gets one, and
  the job's wall-clock limit (`task_time_limit_s`) is enforced by killing that process.
"""

from __future__ import annotations

import logging
import resource

from service.settings import Settings

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
