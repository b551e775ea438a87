"""Names of the artifacts a job writes that more than one side reads (workers write, the API and UI read)."""

from __future__ import annotations

# Per class, a few clean samples with their adversarial versions: the report page's example grid.
EXAMPLES_ARTIFACT = "adversarial_examples.npz"
