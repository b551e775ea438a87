"""Natural robustness: what a model does on inputs nobody optimised against it (issue 17)."""
