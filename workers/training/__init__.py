"""Adversarial training: PGD (Madry et al.), FGSM-RS (Wong et al.) and TRADES (Zhang et al.)."""

from __future__ import annotations

from workers.training.data import split_validation
from workers.training.errors import TrainingCancelled, TrainingError
from workers.training.export import export_keras, export_saved_model_zip
from workers.training.trainer import AdversarialTrainer, TrainingOutcome, train
from workers.training.variables import trainable_variables

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
