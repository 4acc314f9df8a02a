"""Training: ``SeparationTrainer`` (a ``transformers.Trainer``), its arguments, callbacks and the entry point.

``accelerate launch examples/run_separation.py CONFIG.yaml [--key value ...]`` runs :func:`.runner.main`.
"""

from .arguments import DataArguments, ModelArguments, SeparationTrainingArguments, parse_config
from .callbacks import CurriculumCallback, EpochDatasetView
from .trainer import (
    GatedReduceLROnPlateau,
    NonFiniteLossError,
    SeparationTrainer,
    batch_metrics,
    separation_loss,
)

__all__ = [
    "DataArguments",
    "ModelArguments",
    "SeparationTrainingArguments",
    "parse_config",
    "CurriculumCallback",
    "EpochDatasetView",
    "GatedReduceLROnPlateau",
    "NonFiniteLossError",
    "SeparationTrainer",
    "batch_metrics",
    "separation_loss",
]
