"""Trainer callbacks: the curriculum (variants per epoch and LR-scheduler gating) and its dataset view.

The thesis applies the curriculum at every epoch boundary (``specs/training.md`` §2): epoch ``e`` (1-based)
trains on the variants of the latest stage with ``epoch ≤ e``, and the LR scheduler only steps once a stage
marked ``lr_scheduler: start`` has been reached (never, if no stage says so; always, without a curriculum).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

from torch.utils.data import Dataset
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["CurriculumCallback", "EpochDatasetView", "current_epoch"]


def current_epoch(state) -> int:
    """The 1-based epoch about to run, from Trainer's float ``state.epoch`` (completed epochs, with rounding)."""
    return int(math.floor((state.epoch or 0.0) + 1e-6)) + 1


class EpochDatasetView(Dataset):
    """A view of a PolSESS training dataset that hides its ``set_epoch``.

    accelerate's DataLoader calls ``dataset.set_epoch(epoch)`` with a **0-based** epoch when the dataset has
    that method; PolSESS epochs are 1-based (the curriculum's numbering) and are set by
    :class:`CurriculumCallback` instead. Items and length are the dataset's.

    Args:
        dataset: a map-style dataset with ``set_epoch(e)`` (1-based), e.g. ``load_polsess(..., split="train")``.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def __repr__(self) -> str:
        return f"EpochDatasetView({self.dataset!r})"


class CurriculumCallback(TrainerCallback):
    """Set the training dataset's epoch and the LR-scheduler gate at each epoch start.

    Args:
        train_dataset: the dataset (or :class:`EpochDatasetView`) whose ``set_epoch(e)`` selects the stage.
        curriculum: a :class:`polsess_hf.data.Curriculum` or None (scheduler always on).
        trainer: the :class:`.trainer.SeparationTrainer` (its ``curriculum_state`` is checkpointed).
    """

    def __init__(self, train_dataset: Dataset, curriculum=None, trainer=None):
        self.dataset = getattr(train_dataset, "dataset", train_dataset)
        self.curriculum = curriculum
        self.trainer = trainer
        self._length: Optional[int] = None

    def _apply(self, state, lr_scheduler) -> dict[str, Any]:
        epoch = current_epoch(state)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        enabled = True if self.curriculum is None else self.curriculum.lr_scheduler_active(epoch)
        if lr_scheduler is not None and hasattr(lr_scheduler, "enabled"):
            lr_scheduler.enabled = enabled
        info: dict[str, Any] = {"epoch": epoch, "lr_scheduler_enabled": enabled}
        if self.curriculum is not None:
            info["stage"] = self.curriculum.stage_index_at(epoch)
            info["variants"] = list(self.curriculum.variants_at(epoch))
            if self.curriculum.stage_changes_at(epoch):
                logger.info(
                    "curriculum: epoch %d starts stage %d, variants %s, LR scheduler %s",
                    epoch, info["stage"] + 1, info["variants"], "on" if enabled else "off",
                )
        if self.trainer is not None:
            self.trainer.curriculum_state = info
        return info

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self._length = len(self.dataset)
        self._apply(state, lr_scheduler)

    def on_epoch_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self._apply(state, lr_scheduler)
        length = len(self.dataset)
        if self._length is not None and length != self._length:
            # Trainer sized the schedule (steps per epoch) from the first epoch's length.
            raise ValueError(
                f"the training set has {length} items at epoch {current_epoch(state)} but {self._length} at the "
                "start: a curriculum stage restricted to one family (indoor or outdoor variants only) changes the "
                "row set; include C or variants of both families in every stage"
            )
