"""fgsm-rs's prior-guided starts: each training sample's perturbation from the previous epoch.

With `fgsm_start: previous` the single FGSM step of epoch e starts where the sample's perturbation
ended in epoch e-1, so the steps add up across epochs the way PGD's add up within a batch, at the cost
of one FGSM step per sample and epoch. The perturbations are part of the run's state: they are
checkpointed with the weights, so a resumed run ends as an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np

from workers.training.errors import TrainingError

# The buffer is as large as the training inputs (float32); beyond this a worker refuses to hold it.
MAX_BYTES = 2 * 2**30


class PreviousPerturbations:
    """One float32 perturbation per training sample, zero until its first FGSM step."""

    def __init__(self, x: np.ndarray) -> None:
        nbytes = int(np.prod(x.shape, dtype=np.int64)) * 4
        if nbytes > MAX_BYTES:
            raise TrainingError(
                f"fgsm_start 'previous' keeps one perturbation per training sample: {nbytes / 2**30:.1f} GiB "
                f"for these {x.shape[0]:,} samples, above the {MAX_BYTES / 2**30:.0f} GiB a worker holds; "
                "use fgsm_start 'random' or fewer training samples"
            )
        self.values = np.zeros(x.shape, np.float32)

    def take(self, chosen: np.ndarray) -> np.ndarray:
        taken: np.ndarray = self.values[chosen]
        return taken

    def store(self, chosen: np.ndarray, perturbation: np.ndarray) -> None:
        self.values[chosen] = perturbation

    def fits(self, saved: np.ndarray | None) -> bool:
        """Whether a checkpoint's perturbations are this run's (one per sample, same shape)."""
        return saved is not None and saved.shape == self.values.shape

    def restore(self, saved: np.ndarray) -> None:
        self.values[...] = saved
