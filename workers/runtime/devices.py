"""Which devices a worker process uses: one GPU per worker, with memory growth, or the CPU.

Pinning is by environment, set before TensorFlow is imported: `parry worker --gpu N` exports
CUDA_VISIBLE_DEVICES=N, so the process sees exactly one GPU (as GPU 0). Memory growth keeps TensorFlow from
taking the whole GPU at start, so the models a worker caches share it. Without a GPU nothing changes: the
same worker runs on the CPU, its thread pools sized by TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS
(TensorFlow reads them itself) when set.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure_devices() -> list[str]:
    """Turn on memory growth for every visible GPU; returns their names (empty on a CPU-only machine)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # TensorFlow already initialised this GPU; growth can no longer change
            log.warning("memory growth could not be set on %s (already initialised)", gpu.name)
    names = [gpu.name for gpu in gpus]
    if names:
        log.info("worker devices: %s, memory growth on", ", ".join(names))
    else:
        log.info("worker devices: CPU only (no GPU visible)")
    return names
