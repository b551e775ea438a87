"""Adversarial training: PGD (Madry et al.), FGSM-RS (Wong et al.) and TRADES (Zhang et al.)."""

from __future__ import annotations

from workers.training.export import export_keras, export_saved_model_zip
from workers.training.trainer import (
    AdversarialTrainer,
    TrainingCancelled,
    TrainingError,
    TrainingOutcome,
    split_validation,
    train,
    trainable_variables,
)

__all__ = [
    "AdversarialTrainer",
    "TrainingCancelled",
    "TrainingError",
    "TrainingOutcome",
    "export_keras",
    "export_saved_model_zip",
    "split_validation",
    "train",
    "trainable_variables",
]
